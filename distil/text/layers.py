"""Layer-map distillation of text models (TinyBERT / MiniLM style): hidden states through a learned projection,
attention maps, and the embedding layer; registered methods that compose with the logit losses in one recipe.

`layer_map` pairs student layer i with teacher layer j (0 = the embeddings output, 1..L the transformer / LSTM /
CNN layers); by default student layer i takes teacher layer i·N/M (TinyBERT's uniform map). Every term averages
over the real tokens only: padding never counts.
"""

from __future__ import annotations

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from distil.errors import DistilError
from distil.methods.base import Method, Outputs, register
from distil.text.models import TextModel


class LayerMapParams(BaseModel):
    """Which student layer learns from which teacher layer."""

    model_config = ConfigDict(extra="forbid")
    layer_map: dict[int, int] | None = Field(
        None, description="student layer -> teacher layer (0 = embeddings); default: i -> i*N/M")


class LayerMapMethod(Method):
    """Base of the layer-map losses: finds both text models, asks them for features, checks and builds the map."""

    feature_kind = "hidden"
    first_layer = 1
    Params = LayerMapParams
    default_weight = "auto"

    def __init__(self, weight: float | str | None = None, ratio: float | None = None, **params) -> None:
        super().__init__(weight, ratio, **params)
        self.pairs: list[tuple[int, int]] = []
        self.models: list[TextModel] = []

    def default_map(self, s_layers: int, t_layers: int) -> dict[int, int]:
        """TinyBERT's uniform map: student layer i ← teacher layer i·N/M."""
        return {i: i * t_layers // s_layers for i in range(self.first_layer, s_layers + 1)}

    def attach(self, student: nn.Module, teacher) -> None:
        """Ask both models for their features, validate the layer map and build what the loss owns."""
        teacher_model = getattr(teacher, "model", None)
        for role, model in (("student", student), ("teacher", teacher_model)):
            if not isinstance(model, TextModel):
                kind = "a live teacher" if role == "teacher" else "a text student"
                raise DistilError(f"distill.losses: '{self.name}' needs {kind} (hf:, hf_student, bilstm or textcnn) "
                                  "whose layers it can read; remove the cache section or this loss.")
        s_layers, t_layers = student.num_layers, teacher_model.num_layers
        layer_map = self.params.layer_map or self.default_map(s_layers, t_layers)
        for s, t in layer_map.items():
            if not (self.first_layer <= s <= s_layers and self.first_layer <= t <= t_layers):
                raise DistilError(f"distill.losses.{self.name}.layer_map: {s}: {t} is out of range; the student has "
                                  f"layers {self.first_layer}..{s_layers}, the teacher {self.first_layer}..{t_layers}.")
        self.pairs = sorted(layer_map.items())
        self.check(student, teacher_model)
        self.models = [student, teacher_model]
        for model in self.models:
            model.request_features(set(model.features) | {self.feature_kind})

    def check(self, student: TextModel, teacher: TextModel) -> None:
        """Build parameters or refuse a pair of models the loss cannot compare."""

    def detach(self) -> None:
        """Training is over: the models return plain logits again."""
        for model in self.models:
            model.request_features(set())
        self.models = []

    def features(self, out: Outputs, kind: str, layer: int) -> Tensor:
        """One feature of a model's outputs, or DistilError when the model did not return it."""
        key = f"{kind}.{layer}"
        if key not in out.features:
            raise DistilError(f"distill.losses: '{self.name}' needs {key} from the model, which did not return it; "
                              "use a text model (hf:, hf_student, bilstm, textcnn) and a live teacher.")
        return out.features[key]


class HiddenParams(LayerMapParams):
    """Layer map and whether a learned projection maps student widths to the teacher's."""

    project: bool = Field(True, description="learn a linear map from the student's width to the teacher's")


@register("hidden_mse")
class HiddenMSE(LayerMapMethod):
    """MSE between mapped hidden states of student and teacher, through a learned linear projection (TinyBERT)."""

    paper = "Jiao et al. TinyBERT: Distilling BERT for Natural Language Understanding. 2020"
    Params = HiddenParams

    def check(self, student: TextModel, teacher: TextModel) -> None:
        """One projection per mapped student layer (identity when the widths match and `project` is off)."""
        self.projections = nn.ModuleDict()
        for s, t in self.pairs:
            ws, wt = student.width(s), teacher.width(t)
            if self.params.project:
                self.projections[str(s)] = nn.Linear(ws, wt)
            elif ws != wt:
                raise DistilError(f"distill.losses.{self.name}.project: student layer {s} is {ws} wide and teacher "
                                  f"layer {t} {wt}; set project: true.")

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        mask = student.features["attention_mask"].to(torch.float32)
        total = torch.zeros((), device=mask.device)
        for s, t in self.pairs:
            hs = self.features(student, self.feature_kind, s).float()
            if str(s) in self.projections:
                hs = self.projections[str(s)](hs)
            ht = self.features(teacher, self.feature_kind, t).float()
            total = total + (((hs - ht) ** 2).mean(-1) * mask).sum() / mask.sum().clamp_min(1)
        return total / len(self.pairs)


@register("embedding_mse")
class EmbeddingMSE(HiddenMSE):
    """MSE between the embedding-layer outputs, through a learned projection (TinyBERT's embedding loss)."""

    first_layer = 0

    def default_map(self, s_layers: int, t_layers: int) -> dict[int, int]:
        """The embeddings only: {0: 0}."""
        return {0: 0}


def _pair_mask(mask: Tensor) -> Tensor:
    """(B, 1, T, T): 1 where both the query and the key are real tokens."""
    m = mask.to(torch.float32)
    return (m[:, None, :, None] * m[:, None, None, :])


class AttentionMethod(LayerMapMethod):
    """Attention-map losses: the student and teacher need attention; heads are averaged when their counts differ."""

    feature_kind = "attention"

    def check(self, student: TextModel, teacher: TextModel) -> None:
        """Refuse a student without attention maps."""
        if student.attention_heads is None or teacher.attention_heads is None:
            raise DistilError(f"distill.losses: '{self.name}' compares attention maps, which only transformer "
                              "students (hf:, hf_student) have; use hidden_mse for this student.")
        self.average_heads = student.attention_heads != teacher.attention_heads

    def maps(self, student: Outputs, teacher: Outputs, s: int, t: int) -> tuple[Tensor, Tensor]:
        """The two attention maps of a mapped pair, heads averaged when their counts differ."""
        a_s = self.features(student, "attention", s).float()
        a_t = self.features(teacher, "attention", t).float()
        if self.average_heads:
            a_s, a_t = a_s.mean(1, keepdim=True), a_t.mean(1, keepdim=True)
        return a_s, a_t


@register("attention_mse")
class AttentionMSE(AttentionMethod):
    """MSE between mapped attention probability maps over real query/key pairs (TinyBERT's attention loss)."""

    paper = "Jiao et al. TinyBERT: Distilling BERT for Natural Language Understanding. 2020"

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        pair = _pair_mask(student.features["attention_mask"])
        total = torch.zeros((), device=pair.device)
        for s, t in self.pairs:
            a_s, a_t = self.maps(student, teacher, s, t)
            err = ((a_s - a_t) ** 2) * pair
            total = total + err.sum() / (pair.sum() * a_s.shape[1]).clamp_min(1)
        return total / len(self.pairs)


@register("attention_kl")
class AttentionKL(AttentionMethod):
    """KL(teacher ‖ student) between self-attention distributions of each real query, by default of the last layers
    only (MiniLM's attention transfer)."""

    paper = "Wang et al. MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression. 2020"

    def default_map(self, s_layers: int, t_layers: int) -> dict[int, int]:
        """MiniLM: the last student layer learns from the last teacher layer."""
        return {s_layers: t_layers}

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        mask = student.features["attention_mask"].to(torch.float32)
        queries = mask[:, None, :]  # (B, 1, T)
        total = torch.zeros((), device=mask.device)
        for s, t in self.pairs:
            a_s, a_t = self.maps(student, teacher, s, t)
            kl = (a_t * (a_t.clamp_min(1e-12).log() - a_s.clamp_min(1e-12).log())).sum(-1)  # (B, H, T)
            total = total + (kl * queries).sum() / (queries.sum() * a_s.shape[1]).clamp_min(1)
        return total / len(self.pairs)
