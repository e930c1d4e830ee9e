"""Atomic saving and loading of training checkpoints and of self-describing model files."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from distil.errors import DistilError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    write_atomically(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Write text atomically (temp file + rename), so a crash never leaves half a file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_atomically(path: Path, writer) -> None:
    """Call `writer(file)` on a temp file beside `path` and rename it into place only if it succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(path: Path, obj: Any) -> None:
    """torch.save `obj` atomically."""
    write_atomically(path, lambda f: torch.save(obj, f))


def load(path: Path) -> Any:
    """torch.load a file this package wrote, or a DistilError naming the file."""
    path = Path(path)
    if not path.is_file():
        raise DistilError(f"checkpoint {path} does not exist; give the path of a .pt file written by distil.")
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise DistilError(f"checkpoint {path} could not be read ({type(exc).__name__}); it is corrupt or not a "
                          "distil file.") from None


def save_model(path: Path, model: nn.Module, *, config: dict, input_shape: tuple[int, ...], num_classes: int,
               class_names: list[str], extra: dict | None = None) -> None:
    """Save weights with what rebuilds the architecture (model config, input shape, classes)."""
    save(path, {
        "format": "distil-model-1",
        "config": config,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "class_names": list(class_names),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    })


def load_model(path: Path) -> tuple[nn.Module, dict]:
    """Rebuild a model saved by `save_model`; returns the model (eval mode, CPU) and the file's metadata."""
    from distil.models import build_model
    from distil.recipe import ModelConfig

    blob = load(path)
    if not isinstance(blob, dict) or blob.get("format") != "distil-model-1":
        raise DistilError(f"{path} is not a distil model file; use a models/*.pt file from a run folder.")
    model = build_model(ModelConfig.model_validate(blob["config"]), tuple(blob["input_shape"]), blob["num_classes"])
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError:
        raise DistilError(f"{path}: its weights do not fit the architecture it names ({blob['config']['name']}); "
                          "the file was not written by distil.checkpoint.save_model for this model.") from None
    model.eval()
    return model, {k: v for k, v in blob.items() if k != "state_dict"}
