"""Text models: a local Hugging Face classifier (`hf:<folder>`), and students that share its tokenizer — a smaller
transformer from its config (`hf_student`), a BiLSTM and a TextCNN — plus their profile on real sentences.

Every text model takes `model(x)` with x a TensorDict(input_ids, attention_mask) or a plain tensor of right-padded
ids, and returns logits; after `request_features(...)` it returns Outputs whose features are `hidden.<i>` (layer i,
0 = the embeddings), `attention.<i>` (attention probabilities of layer i) and `attention_mask`.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distil.errors import DistilError
from distil.methods.base import Outputs
from distil.models.registry import register_builder, register_prefix
from distil.profile import count_parameters, weight_bytes
from distil.recipe import ModelConfig
from distil.text.config import HF_PREFIX, TextModelConfig, hf_folder
from distil.text.tokenize import TextDataset, load_tokenizer, transformers_module


class TextModel(nn.Module):
    """What the layer-map losses need from a text model: its layer count, widths, and features on request."""

    pad_id: int = 0
    features: frozenset[str] = frozenset()

    def request_features(self, kinds: set[str]) -> None:
        """Return Outputs with these feature kinds (`hidden`, `attention`) from now on; an empty set turns it off."""
        self.features = frozenset(kinds)

    @property
    def num_layers(self) -> int:
        """Layers after the embeddings whose outputs are `hidden.1` ... `hidden.<num_layers>`."""
        raise NotImplementedError

    def width(self, layer: int) -> int:
        """The feature width of `hidden.<layer>`."""
        raise NotImplementedError

    @property
    def attention_heads(self) -> int | None:
        """Heads of each attention map, or None for a model without attention."""
        return None

    def split_inputs(self, x: Tensor | dict) -> tuple[Tensor, Tensor]:
        """(input_ids, attention_mask) from a TensorDict, or from right-padded ids (mask = not padding)."""
        if isinstance(x, dict):
            return x["input_ids"], x["attention_mask"]
        ids = x.long()
        return ids, (ids != self.pad_id).long()

    def result(self, logits: Tensor, mask: Tensor, hidden: list[Tensor], attention: list[Tensor]) -> Tensor | Outputs:
        """Logits, or Outputs carrying the requested features."""
        if not self.features:
            return logits
        features = {"attention_mask": mask}
        if "hidden" in self.features:
            features.update({f"hidden.{i}": h for i, h in enumerate(hidden)})
        if "attention" in self.features:
            features.update({f"attention.{i + 1}": a for i, a in enumerate(attention)})
        return Outputs(logits, features)


class HFClassifier(TextModel):
    """A Hugging Face sequence classifier (AutoModelForSequenceClassification) behind the text-model interface."""

    def __init__(self, model: nn.Module, pad_id: int) -> None:
        super().__init__()
        self.hf = model
        self.pad_id = int(pad_id)

    def request_features(self, kinds: set[str]) -> None:
        """As TextModel; attention maps need the eager attention implementation, switched on here."""
        super().request_features(kinds)
        if "attention" in kinds:
            self.hf.set_attn_implementation("eager")

    @property
    def num_layers(self) -> int:
        """The transformer's layer count."""
        return self.hf.config.num_hidden_layers

    def width(self, layer: int) -> int:
        """Every layer (and the embeddings) has the hidden size."""
        return self.hf.config.hidden_size

    @property
    def attention_heads(self) -> int:
        """The transformer's attention heads."""
        return self.hf.config.num_attention_heads

    def forward(self, x: Tensor | dict) -> Tensor | Outputs:
        """Logits (or Outputs with hidden states / attention maps when requested)."""
        ids, mask = self.split_inputs(x)
        out = self.hf(input_ids=ids, attention_mask=mask, output_hidden_states="hidden" in self.features,
                      output_attentions="attention" in self.features)
        return self.result(out.logits, mask, list(out.hidden_states or ()), list(out.attentions or ()))


def _source(cfg: ModelConfig, role: str = "student") -> tuple[TextModelConfig, Path]:
    text = cfg.text or TextModelConfig()
    if text.source is None:
        raise DistilError(f"{role}.text.source: model '{cfg.name}' shares a Hugging Face tokenizer; set it to a local "
                          "folder, or use an hf:<folder> teacher (its folder is taken).")
    path = Path(text.source).expanduser()
    if not path.is_dir():
        raise DistilError(f"{role}.text.source: {path} is not a folder; give a local Hugging Face model folder.")
    return text, path


def load_hf_classifier(folder: str | Path, num_classes: int, field: str = "teacher.name") -> HFClassifier:
    """A pretrained local checkpoint with a (new) classification head for `num_classes` classes."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise DistilError(f"{field}: {path} is not a folder; give a local Hugging Face model folder.")
    transformers = transformers_module()
    try:
        model = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(path), num_labels=num_classes, local_files_only=True, ignore_mismatched_sizes=True)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise DistilError(f"{field}: no model could be loaded from {path} ({first}); give a folder with config.json "
                          "and the weights of a Hugging Face model.") from None
    return HFClassifier(model, load_tokenizer(path, field).pad_token_id)


def build_hf(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> HFClassifier:
    """`hf:<folder>`: the local checkpoint in <folder> as a classifier of `num_classes` classes."""
    return load_hf_classifier(hf_folder(cfg.name), num_classes, field=f"model '{cfg.name}'")


def _layer_list(model: nn.Module, layers: int) -> str:
    """The module path of the transformer's list of layers (the ModuleList with `layers` entries)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == layers:
            return name
    raise DistilError(f"text.init: no list of {layers} layers was found in the source model; use init: random.")


def copy_every_other_layer(student: nn.Module, teacher: nn.Module, s_layers: int, t_layers: int) -> int:
    """DistilBERT-style init: student layer i ← teacher layer i·N/M, embeddings and other same-shaped tensors copied.

    Returns how many tensors were copied. The classification head stays freshly initialised.
    """
    s_prefix, t_prefix = _layer_list(student, s_layers) + ".", _layer_list(teacher, t_layers) + "."
    source = teacher.state_dict()
    target = student.state_dict()
    copied = 0
    for key, value in target.items():
        name = key
        if key.startswith(s_prefix):
            index, rest = key[len(s_prefix):].split(".", 1)
            name = f"{t_prefix}{int(index) * t_layers // s_layers}.{rest}"
        if "classifier" in key or name not in source or source[name].shape != value.shape:
            continue
        target[key] = source[name].clone()
        copied += 1
    student.load_state_dict(target)
    return copied


def build_hf_student(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> HFClassifier:
    """`hf_student`: the source's config with fewer layers and/or narrower, optionally DistilBERT-initialised."""
    text, path = _source(cfg)
    transformers = transformers_module()
    config = transformers.AutoConfig.from_pretrained(str(path), local_files_only=True)
    t_layers, t_width, t_heads = config.num_hidden_layers, config.hidden_size, config.num_attention_heads
    width = text.hidden_size or t_width
    heads = text.heads or max(1, width // max(1, t_width // t_heads))
    if width % heads:
        raise DistilError(f"student.text.heads: {heads} heads do not divide the width {width}; pick a divisor.")
    config.num_hidden_layers = text.layers or max(1, t_layers // 2)
    config.hidden_size, config.num_attention_heads = width, heads
    config.intermediate_size = text.intermediate_size or config.intermediate_size * width // t_width
    config.num_labels = num_classes
    if cfg.dropout:
        config.hidden_dropout_prob = cfg.dropout
    model = transformers.AutoModelForSequenceClassification.from_config(config)
    if text.init == "teacher":
        if width != t_width:
            raise DistilError(f"student.text.init: copying the source's layers needs its width {t_width}, not "
                              f"{width}; set text.hidden_size to {t_width} or text.init to random.")
        source = transformers.AutoModelForSequenceClassification.from_pretrained(
            str(path), num_labels=num_classes, local_files_only=True, ignore_mismatched_sizes=True)
        copy_every_other_layer(model, source, config.num_hidden_layers, t_layers)
    return HFClassifier(model, load_tokenizer(path, "student.text.source").pad_token_id)


def _embedding(text: TextModelConfig, path: Path, tokenizer) -> nn.Embedding:
    """Word embeddings: random, or the source model's (trainable or frozen)."""
    if text.embeddings == "random":
        return nn.Embedding(len(tokenizer), text.embedding_dim, padding_idx=tokenizer.pad_token_id)
    transformers = transformers_module()
    source = transformers.AutoModel.from_pretrained(str(path), local_files_only=True)
    weight = source.get_input_embeddings().weight.detach().clone()
    return nn.Embedding.from_pretrained(weight, freeze=text.embeddings == "teacher_frozen",
                                        padding_idx=tokenizer.pad_token_id)


class BiLSTMClassifier(TextModel):
    """Embeddings → stacked bidirectional LSTMs → masked mean and max pooling → linear (Tang et al. 2019)."""

    def __init__(self, embedding: nn.Embedding, hidden: list[int], num_classes: int, pad_id: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.pad_id = int(pad_id)
        self.embedding = embedding
        sizes = [embedding.embedding_dim] + [2 * h for h in hidden]
        self.lstms = nn.ModuleList(nn.LSTM(sizes[i], h, batch_first=True, bidirectional=True)
                                   for i, h in enumerate(hidden))
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(2 * sizes[-1], num_classes)
        self.widths = sizes

    @property
    def num_layers(self) -> int:
        """One feature layer per LSTM."""
        return len(self.lstms)

    def width(self, layer: int) -> int:
        """The embedding width (layer 0) or twice the LSTM's hidden size."""
        return self.widths[layer]

    def forward(self, x: Tensor | dict) -> Tensor | Outputs:
        """Logits (or Outputs with the embeddings and each LSTM's outputs when requested)."""
        ids, mask = self.split_inputs(x)
        lengths = mask.sum(1).clamp_min(1).cpu()
        hidden = [self.embedding(ids)]
        h = self.dropout(hidden[0])
        for lstm in self.lstms:
            packed = nn.utils.rnn.pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
            out, _ = lstm(packed)
            h, _ = nn.utils.rnn.pad_packed_sequence(out, batch_first=True, total_length=ids.shape[1])
            hidden.append(h)
        logits = self.head(self.dropout(masked_pool(h, mask)))
        return self.result(logits, mask, hidden, [])


class TextCNNClassifier(TextModel):
    """Embeddings → parallel 1-D convolutions of widths 3, 4, 5 → ReLU → masked max-over-time → linear (Kim 2014)."""

    def __init__(self, embedding: nn.Embedding, channels: int, num_classes: int, pad_id: int,
                 dropout: float = 0.0, kernel_sizes: tuple[int, ...] = (3, 4, 5)) -> None:
        super().__init__()
        self.pad_id = int(pad_id)
        self.embedding = embedding
        dim = embedding.embedding_dim
        self.convs = nn.ModuleList(nn.Conv1d(dim, channels, k) for k in kernel_sizes)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(channels * len(kernel_sizes), num_classes)
        self.widths = [dim, channels * len(kernel_sizes)]

    @property
    def num_layers(self) -> int:
        """The convolutions form one feature layer."""
        return 1

    def width(self, layer: int) -> int:
        """The embedding width (layer 0) or all convolution channels."""
        return self.widths[layer]

    def forward(self, x: Tensor | dict) -> Tensor | Outputs:
        """Logits (or Outputs with the embeddings and the convolution maps when requested)."""
        ids, mask = self.split_inputs(x)
        embedded = self.embedding(ids) * mask[..., None]  # padding reads as zeros, like the borders
        h = self.dropout(embedded).transpose(1, 2)
        conv = torch.cat([F.relu(c(F.pad(h, ((c.kernel_size[0] - 1) // 2, c.kernel_size[0] // 2))))
                          for c in self.convs], dim=1).transpose(1, 2)
        pooled = conv.masked_fill(~mask.bool()[..., None], float("-inf")).amax(1)
        logits = self.head(self.dropout(pooled))
        return self.result(logits, mask, [embedded, conv], [])


def masked_pool(h: Tensor, mask: Tensor) -> Tensor:
    """Concatenated mean and max over the real (unpadded) positions of (B, T, D) features."""
    m = mask[..., None].to(h.dtype)
    mean = (h * m).sum(1) / m.sum(1).clamp_min(1)
    peak = h.masked_fill(m == 0, float("-inf")).amax(1)
    return torch.cat([mean, peak], dim=-1)


def build_bilstm(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> BiLSTMClassifier:
    """`bilstm`: BiLSTM sharing the source's tokenizer; `hidden` LSTM sizes (default [256]); optional its embeddings."""
    text, path = _source(cfg)
    tokenizer = load_tokenizer(path, "student.text.source")
    return BiLSTMClassifier(_embedding(text, path, tokenizer), list(cfg.hidden or [256]), num_classes,
                            tokenizer.pad_token_id, cfg.dropout)


def build_textcnn(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> TextCNNClassifier:
    """`textcnn`: Kim's CNN sharing the source's tokenizer; `channels` per kernel width (default [100])."""
    text, path = _source(cfg)
    tokenizer = load_tokenizer(path, "student.text.source")
    channels = (cfg.channels or [100])[0]
    return TextCNNClassifier(_embedding(text, path, tokenizer), channels, num_classes, tokenizer.pad_token_id,
                             cfg.dropout)


@torch.inference_mode()
def profile_text_model(model: nn.Module, dataset: TextDataset, device: torch.device, *, repeats: int = 50,
                       throughput_batch: int = 256) -> dict[str, float]:
    """Parameters, bytes, median latency (ms) of one real sentence at a time, and sentences/s in batches."""
    model = model.to(device).eval()
    n = len(dataset)
    singles = [dataset.inputs(torch.tensor([i % n])).to(device) for i in range(max(3, repeats))]
    for x in singles[:3]:
        model(x)
    times = []
    for x in singles:
        start = time.perf_counter()
        model(x)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - start)
    batch = dataset.inputs(torch.arange(min(n, throughput_batch))).to(device)
    start = time.perf_counter()
    model(batch)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elapsed = time.perf_counter() - start
    return {"params": count_parameters(model), "bytes": weight_bytes(model),
            "latency_ms": statistics.median(times) * 1000, "throughput": batch["input_ids"].shape[0] / elapsed}


TEXT_BUILDERS = {  # name -> (builder, line for `distil models`); text students are built only for text data
    "hf_student": (build_hf_student, "smaller transformer from the hf: teacher's config; text.layers, "
                   "text.hidden_size, text.init: teacher (DistilBERT)"),
    "bilstm": (build_bilstm, "BiLSTM on the hf: teacher's tokenizer; hidden, text.embeddings: teacher"),
    "textcnn": (build_textcnn, "Kim's TextCNN on the hf: teacher's tokenizer; channels, text.embeddings: teacher"),
}
register_prefix(HF_PREFIX, build_hf, "hf:path/to/local/hf/folder",
                "a local Hugging Face sequence classifier (teacher or student)")
for _name, (_build, _line) in TEXT_BUILDERS.items():
    register_builder(_name, _build, _line)
