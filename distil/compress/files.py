"""Model files of compressed students: what replays the compression on load, and one loader for every distil model.

A structurally pruned or int8 model cannot be rebuilt from its zoo config alone, so its file (format
`distil-compressed-1`) also keeps the pruned layer widths and the quantization mode; loading builds the zoo model,
shrinks it, re-creates the int8 structure and then loads the saved state dict.
"""

from __future__ import annotations

import warnings
from collections.abc import Collection
from pathlib import Path

import torch
from torch import nn

from distil import checkpoint
from distil.compress import quantize as q
from distil.compress.prune import shrink_to
from distil.errors import DistilError

FORMAT = "distil-compressed-2"  # weights + JSON metadata holding the pruned widths and the quantization mode
OLD_FORMAT = "distil-compressed-1"  # the same fields as plain data beside the weights: still loaded (data only)
INPUT_FIELDS = ("preprocess", "data")  # what a model file keeps about its inputs, carried to compressed copies


def save_compressed(path: Path, model: nn.Module, meta: dict, *, widths: dict[str, int] | None = None,
                    quantized: dict | None = None) -> None:
    """Save a compressed model with `meta` (config, input_shape, num_classes, class_names, extra) and its recipe."""
    base = {k: meta[k] for k in ("config", "input_shape", "num_classes", "class_names")}
    base.update({k: meta[k] for k in INPUT_FIELDS if k in meta})
    if not widths and not quantized:
        checkpoint.save_model(path, model, **base, extra=meta.get("extra"))
        return
    described = checkpoint.model_metadata(**base, extra=meta.get("extra"), widths=widths or {}, quantized=quantized)
    checkpoint.save_weights(path, model.state_dict(), described, fmt=FORMAT)


def load_any(path: Path, *, trust_code: bool | Collection[str] = False) -> tuple[nn.Module, dict]:
    """Load any model file distil writes (plain, pruned or int8); returns the model (eval, CPU) and its metadata.

    `trust_code` as in `checkpoint.load_model` (a file naming a `python:` factory needs it).
    """
    path = Path(path)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="TypedStorage is deprecated")  # torch.load of int8 tensors
        meta, state = checkpoint.read_model_file(path, (checkpoint.MODEL_FORMAT, FORMAT, OLD_FORMAT))
    model = checkpoint.build_from_metadata(path, meta, trust_code=trust_code)
    if meta["format"] not in (FORMAT, OLD_FORMAT):
        named = f"the architecture it names ({meta['config']['name']})"
        return checkpoint.with_weights(model, state, meta, path, named)
    shape = tuple(meta["input_shape"])
    example = torch.zeros(1, *shape)
    model.eval()
    try:
        if meta.get("widths"):
            shrink_to(model, example, meta["widths"])
        if meta.get("quantized"):
            model = q.rebuild(model, meta["quantized"]["mode"], meta["quantized"]["backend"], example)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DistilError(f"{path}: its compression metadata is damaged ({type(exc).__name__}); use an intact "
                          "model file from a run folder.") from None
    return checkpoint.with_weights(model, state, meta, path, "the compressed architecture it describes")
