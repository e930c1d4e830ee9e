"""Model files of compressed students: what replays the compression on load, and one loader for every distil model.

A structurally pruned or int8 model cannot be rebuilt from its zoo config alone, so its file (format
`distil-compressed-1`) also keeps the pruned layer widths and the quantization mode; loading builds the zoo model,
shrinks it, re-creates the int8 structure and then loads the saved state dict.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from torch import nn

from distil import checkpoint
from distil.compress import quantize as q
from distil.compress.prune import shrink_to
from distil.errors import DistilError

FORMAT = "distil-compressed-1"


def save_compressed(path: Path, model: nn.Module, meta: dict, *, widths: dict[str, int] | None = None,
                    quantized: dict | None = None) -> None:
    """Save a compressed model with `meta` (config, input_shape, num_classes, class_names, extra) and its recipe."""
    if not widths and not quantized:
        checkpoint.save_model(path, model, config=meta["config"], input_shape=tuple(meta["input_shape"]),
                              num_classes=meta["num_classes"], class_names=meta["class_names"], extra=meta["extra"])
        return
    checkpoint.save(path, {**meta, "format": FORMAT, "widths": widths or {}, "quantized": quantized,
                           "state_dict": model.state_dict()})


def load_any(path: Path) -> tuple[nn.Module, dict]:
    """Load any model file distil writes (plain, pruned or int8); returns the model (eval, CPU) and its metadata."""
    path = Path(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")  # torch.load of int8 tensors
        blob = checkpoint.load(path)
    if not isinstance(blob, dict) or blob.get("format") not in {FORMAT, checkpoint.MODEL_FORMAT}:
        raise DistilError(f"{path} is not a distil model file; use a models/*.pt file from a run folder.")
    if blob["format"] != FORMAT:
        return checkpoint.model_from_blob(path, blob)
    from distil.models import build_model
    from distil.recipe import ModelConfig

    shape = tuple(blob["input_shape"])
    example = torch.zeros(1, *shape)
    model = build_model(ModelConfig.model_validate(blob["config"]), shape, blob["num_classes"]).eval()
    if blob["widths"]:
        shrink_to(model, example, blob["widths"])
    if blob["quantized"]:
        model = q.rebuild(model, blob["quantized"]["mode"], blob["quantized"]["backend"], example)
    return checkpoint.with_weights(model, blob, path, "the compressed architecture it describes")
