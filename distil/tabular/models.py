"""CTR models over encoded rows: DeepFM, DCN-v2, Wide & Deep (teachers); MLP, FM, logistic regression (students).

Built in-house: each is a few lines over one shared field-embedding layer, reads the same encoded row as every
other distil model reads its tensor (so the engine, cache, losses and ONNX export need nothing special), and needs
no dependency (DeepCTR-Torch / FuxiCTR bring their own data pipelines and trainers). Binary models compute one
logit z and return [0, z], whose softmax is the sigmoid: cross-entropy is log-loss and `kd` at T is Bernoulli KD.
A model reads the first `width` columns of its input, so a student (no teacher-only fields) takes a teacher's row.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from distil.errors import DistilError
from distil.methods.base import Outputs
from distil.models.registry import register_prefix
from distil.recipe import ModelConfig
from distil.tabular.config import TabularModelConfig
from distil.tabular.encoders import Field


class FieldEmbedding(nn.Module):
    """Every field as a `dim`-vector: a categorical code's row, the mean of a bag's rows, a number times a vector;
    `first_order` gives each field's scalar weight(s) instead when `dim` is the output count."""

    def __init__(self, fields: list[Field], dim: int) -> None:
        super().__init__()
        self.fields = [(f.kind, f.offset, f.width) for f in fields]
        self.tables = nn.ModuleList()
        for f in fields:
            if f.kind == "numeric":
                self.tables.append(nn.Linear(f.width, dim))
            else:
                self.tables.append(nn.Embedding(f.size, dim, padding_idx=0 if f.kind == "multi_valued" else None))
                nn.init.normal_(self.tables[-1].weight, std=0.01)
        self.dim = dim

    @property
    def num_fields(self) -> int:
        """Fields embedded."""
        return len(self.fields)

    def forward(self, x: Tensor) -> Tensor:
        """(B, width) encoded rows -> (B, fields, dim)."""
        out = []
        for (kind, offset, width), table in zip(self.fields, self.tables):
            part = x[:, offset:offset + width]
            if kind == "numeric":
                out.append(table(part))
            elif kind == "categorical":
                out.append(table(part[:, 0].long()))
            else:
                codes = part.long()
                mask = (codes > 0).unsqueeze(-1).float()
                out.append((table(codes) * mask).sum(1) / mask.sum(1).clamp(min=1.0))
        return torch.stack(out, dim=1)


def mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    """Linear + ReLU (+ dropout) layers through `sizes` (the last layer has no activation)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
            if dropout:
                layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


def fm_interaction(e: Tensor) -> Tensor:
    """The factorisation machine's pairwise term sum_{i<j} <e_i, e_j> from (B, F, d) embeddings, as (B, 1)."""
    return 0.5 * (e.sum(1).pow(2) - e.pow(2).sum(1)).sum(1, keepdim=True)


class TabularModel(nn.Module):
    """A model over encoded rows: subclasses compute `score(x) -> (B, outputs)`; binary tasks return [0, z]."""

    def __init__(self, fields: list[Field], outputs: int, binary: bool) -> None:
        super().__init__()
        self.width = sum(f.width for f in fields)
        self.binary = binary
        self.outputs = 1 if binary else outputs

    def score(self, x: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Logits of encoded rows (extra columns beyond this model's fields, teacher-only ones, are ignored)."""
        z = self.score(x[:, :self.width])
        return torch.cat([torch.zeros_like(z), z], dim=1) if self.binary else z


class LogisticRegression(TabularModel):
    """Logistic (or softmax / linear) regression: one weight per categorical value and per number."""

    def __init__(self, cfg: TabularModelConfig, fields: list[Field], outputs: int, binary: bool) -> None:
        super().__init__(fields, outputs, binary)
        self.linear = FieldEmbedding(fields, self.outputs)
        self.bias = nn.Parameter(torch.zeros(self.outputs))

    def score(self, x: Tensor) -> Tensor:
        return self.linear(x).sum(1) + self.bias


class FM(LogisticRegression):
    """Factorization machine (Rendle 2010): the linear part plus pairwise field interactions."""

    def __init__(self, cfg: TabularModelConfig, fields: list[Field], outputs: int, binary: bool) -> None:
        super().__init__(cfg, fields, outputs, binary)
        self.embed = FieldEmbedding(fields, cfg.embed_dim)

    def score(self, x: Tensor) -> Tensor:
        return super().score(x) + fm_interaction(self.embed(x))


class MLP(TabularModel):
    """A small MLP over the concatenated field embeddings (the default student)."""

    def __init__(self, cfg: TabularModelConfig, fields: list[Field], outputs: int, binary: bool) -> None:
        super().__init__(fields, outputs, binary)
        self.embed = FieldEmbedding(fields, cfg.embed_dim)
        self.deep = mlp([len(fields) * cfg.embed_dim, *cfg.hidden, self.outputs], cfg.dropout)

    def score(self, x: Tensor) -> Tensor:
        return self.deep(self.embed(x).flatten(1))


class WideDeep(LogisticRegression):
    """Wide & Deep (Cheng et al. 2016): a linear model over the raw fields plus an MLP over their embeddings."""

    def __init__(self, cfg: TabularModelConfig, fields: list[Field], outputs: int, binary: bool) -> None:
        super().__init__(cfg, fields, outputs, binary)
        self.embed = FieldEmbedding(fields, cfg.embed_dim)
        self.deep = mlp([len(fields) * cfg.embed_dim, *cfg.hidden, self.outputs], cfg.dropout)

    def score(self, x: Tensor) -> Tensor:
        return super().score(x) + self.deep(self.embed(x).flatten(1))


class DeepFM(WideDeep):
    """DeepFM (Guo et al. 2017): linear + FM + MLP sharing one set of field embeddings."""

    def score(self, x: Tensor) -> Tensor:
        e = self.embed(x)
        return LogisticRegression.score(self, x) + fm_interaction(e) + self.deep(e.flatten(1))


class CrossLayer(nn.Module):
    """One DCN-v2 cross layer: x_{l+1} = x_0 * (W x_l + b) + x_l."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)

    def forward(self, x0: Tensor, x: Tensor) -> Tensor:
        """The next layer from the input x0 and the current x."""
        return x0 * self.linear(x) + x


class DCNv2(TabularModel):
    """DCN-v2 (Wang et al. 2021), parallel form: cross layers and an MLP over the embeddings, then one linear head."""

    def __init__(self, cfg: TabularModelConfig, fields: list[Field], outputs: int, binary: bool) -> None:
        super().__init__(fields, outputs, binary)
        self.embed = FieldEmbedding(fields, cfg.embed_dim)
        dim = len(fields) * cfg.embed_dim
        self.cross = nn.ModuleList(CrossLayer(dim) for _ in range(cfg.cross_layers))
        self.deep = mlp([dim, *cfg.hidden], cfg.dropout)
        self.deep.append(nn.ReLU())
        self.head = nn.Linear(dim + cfg.hidden[-1], self.outputs)

    def score(self, x: Tensor) -> Tensor:
        x0 = self.embed(x).flatten(1)
        crossed = x0
        for layer in self.cross:
            crossed = layer(x0, crossed)
        return self.head(torch.cat([crossed, self.deep(x0)], dim=1))


class Ensemble(nn.Module):
    """The mean of several models' logits; `features["members"]` holds each member's logit for gating losses."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Outputs:
        """Averaged logits (binary: of z), with the members' logits as a feature."""
        logits = torch.stack([m(x) for m in self.members], dim=1)  # (B, M, C)
        return Outputs(logits.mean(1), {"members": logits})


BUILDERS: dict[str, Callable[..., TabularModel]] = {
    "deepfm": DeepFM, "dcn_v2": DCNv2, "wide_deep": WideDeep, "mlp": MLP, "fm": FM, "lr": LogisticRegression}


def build_tabular(cfg: TabularModelConfig, fields: list[Field], task: str, num_classes: int) -> TabularModel:
    """A fresh model of `cfg` over `fields` for the task (binary / multiclass / regression)."""
    return BUILDERS[cfg.name](cfg, fields, num_classes, task == "binary")


def tabular_model_spec(cfg: TabularModelConfig, fields: list[Field], task: str) -> dict:
    """What a model file records to rebuild a tabular model: its config, the task and the field layout (no
    vocabularies: those travel in the file's "records" preprocessing)."""
    layout = [{"name": f.name, "kind": f.kind, "offset": f.offset, "width": f.width, "size": f.size} for f in fields]
    return {"model": cfg.model_dump(mode="json"), "task": task, "fields": layout}


def build_from_spec(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The model of a tabular model file (`tabular:<name>` with its `tabular` spec), for distil eval / serve."""
    spec = cfg.tabular
    try:
        model_cfg = TabularModelConfig.model_validate(spec["model"])
        fields = [Field(**f) for f in spec["fields"]]
        task = spec["task"]
    except (KeyError, TypeError, ValueError):
        raise DistilError(f"model '{cfg.name}': tabular models are built by a recipe's tabular: section (its "
                          "teachers and student); a model file naming one must carry its tabular spec.") from None
    return build_tabular(model_cfg, fields, task, num_classes)


register_prefix("tabular:", build_from_spec, "tabular:<name>", "a tabular model file's architecture (deepfm, dcn_v2, "
                "wide_deep, mlp, fm, lr over field embeddings): set in the tabular: section of a recipe")
