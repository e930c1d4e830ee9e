"""Atomic, checksummed saving and loading of training checkpoints and of self-describing model files.

Every file `save` writes is a torch.save payload followed by an 80-byte trailer holding the payload's SHA-256
(torch.load ignores bytes after the zip archive, so plain `torch.load` still reads it). `load` checks the
trailer, so a truncated or damaged file is found before it is used. Training checkpoints keep the previous
good one beside them (`<stage>.prev.ckpt`), which `load_checkpoint` falls back to.

In a distributed run only rank 0 writes: on any other rank `write_atomically` does nothing.
"""

from __future__ import annotations

import errno
import hashlib
import io
import logging
import os
import signal
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from distil.errors import DistilError

TRAILER_TAG = b"\nDISTIL-SHA256 "
TRAILER_SIZE = len(TRAILER_TAG) + 64 + 1
MODEL_FORMAT = "distil-model-1"  # the tag of a file written by save_model
CRASH_ENV = "DISTIL_CRASH_AT"  # tests only: "<point>:<n>" kills this process (SIGKILL) inside its n-th `save`

log = logging.getLogger("distil")
_saves = 0  # how many `save` calls this process has made
_in_save = 0  # the number of the `save` in progress (0 outside one), for the crash points


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write `data` to a temporary file beside `path`, fsync it, then rename it over `path`."""
    write_atomically(path, lambda f: f.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    """Write text atomically (temp file + rename), so a crash never leaves half a file."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_atomically(path: Path, writer: Callable[[IO[bytes]], Any], *, keep_previous: Path | None = None) -> None:
    """Call `writer(file)` on a temp file beside `path` and rename it into place only if it succeeds.

    A failure while writing (a full disk, a crash) leaves `path` as it was. With `keep_previous`, the file
    being replaced is first moved there. Only rank 0 of a distributed run writes.
    """
    from distil import distributed

    if not distributed.is_main():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            writer(f)
            f.flush()
            os.fsync(f.fileno())
        _crash_point("rename")
        if keep_previous is not None and path.is_file():
            os.replace(path, keep_previous)
            _crash_point("rotate")
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DistilError(f"no space left on device while writing {path}; the previous file is kept; free some "
                              "space and run again (with --resume).") from None
        raise
    for stale in path.parent.glob(f".{path.name}.*.tmp"):  # left by a process killed mid-write
        stale.unlink(missing_ok=True)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _crash_point(point: str) -> None:
    """Fault injection for the crash tests: SIGKILL this process at `point` of the n-th `save` named by CRASH_ENV."""
    spec = os.environ.get(CRASH_ENV)
    if spec and _in_save and spec == f"{point}:{_in_save}":
        os.kill(os.getpid(), signal.SIGKILL)


def _payload(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    return data + TRAILER_TAG + hashlib.sha256(data).hexdigest().encode("ascii") + b"\n"


def save(path: Path, obj: Any, *, keep_previous: Path | None = None) -> None:
    """torch.save `obj` atomically, with its SHA-256 in a trailer (and the replaced file kept when asked)."""
    global _saves, _in_save
    _saves += 1
    _in_save = _saves
    try:
        _crash_point("start")
        data = _payload(obj)
        write_atomically(path, lambda f: f.write(data), keep_previous=keep_previous)
        _crash_point("end")
    finally:
        _in_save = 0


def verify(path: Path) -> bytes:
    """The payload of a file `save` wrote, after checking its checksum; DistilError when truncated or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise DistilError(f"checkpoint {path} does not exist; give the path of a .pt file written by distil.")
    data = path.read_bytes()
    trailer = data[-TRAILER_SIZE:]
    if not trailer.startswith(TRAILER_TAG):
        if b"DISTIL-SHA256" in data[-4 * TRAILER_SIZE:]:
            raise DistilError(f"checkpoint {path} is truncated or corrupt (its checksum trailer is damaged).")
        return data  # written before checksums, or by torch.save directly: nothing to check
    payload = data[:-TRAILER_SIZE]
    if hashlib.sha256(payload).hexdigest().encode("ascii") != trailer[len(TRAILER_TAG):-1]:
        raise DistilError(f"checkpoint {path} is truncated or corrupt (SHA-256 mismatch).")
    return payload


def load(path: Path) -> Any:
    """torch.load a file this package wrote (checksum checked), or a DistilError naming the file."""
    payload = verify(path)
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise DistilError(f"checkpoint {path} is truncated or corrupt, or not a distil file (torch.load raised "
                          f"{type(exc).__name__}); use a file distil wrote.") from None


def previous_path(path: Path) -> Path:
    """Where the checkpoint replaced by the latest save is kept: `<stage>.prev.ckpt` beside `<stage>.ckpt`."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def save_checkpoint(path: Path, state: dict) -> None:
    """Save training state atomically with a checksum, keeping the checkpoint it replaces as the previous one."""
    save(path, state, keep_previous=previous_path(path))


def load_checkpoint(path: Path) -> dict | None:
    """The newest good training checkpoint at `path` (falling back to the previous one), or None when none exists.

    A corrupt or truncated checkpoint is reported and skipped; DistilError when no good one is left.
    """
    path = Path(path)
    candidates = [p for p in (path, previous_path(path)) if p.is_file()]
    if not candidates:
        return None
    problems = []
    for candidate in candidates:
        try:
            state = load(candidate)
        except DistilError as exc:
            problems.append(str(exc).rstrip("."))
            continue
        if problems:
            log.warning("distil: %s; resuming from the previous good checkpoint %s.", "; ".join(problems), candidate)
        return state
    raise DistilError(f"{'; '.join(problems)}; no good checkpoint is left: delete {path.parent} to restart the "
                      "stage from scratch.")


def save_model(path: Path, model: nn.Module, *, config: dict, input_shape: tuple[int, ...], num_classes: int,
               class_names: list[str], extra: dict | None = None) -> None:
    """Save weights with what rebuilds the architecture (model config, input shape, classes)."""
    save(path, {
        "format": MODEL_FORMAT,
        "config": config,
        "input_shape": list(input_shape),
        "num_classes": num_classes,
        "class_names": list(class_names),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    })


def load_model(path: Path) -> tuple[nn.Module, dict]:
    """Rebuild a model saved by `save_model`; returns the model (eval mode, CPU) and the file's metadata."""
    return model_from_blob(Path(path), load(path))


def model_from_blob(path: Path, blob: object) -> tuple[nn.Module, dict]:
    """The model of an already loaded `save_model` file (`blob`), as `load_model` returns it."""
    from distil.models import build_model
    from distil.recipe import ModelConfig

    if not isinstance(blob, dict) or blob.get("format") != MODEL_FORMAT:
        raise DistilError(f"{path} is not a distil model file; use a models/*.pt file from a run folder.")
    model = build_model(ModelConfig.model_validate(blob["config"]), tuple(blob["input_shape"]), blob["num_classes"])
    return with_weights(model, blob, path, f"the architecture it names ({blob['config']['name']})")


def with_weights(model: nn.Module, blob: dict, path: Path, architecture: str) -> tuple[nn.Module, dict]:
    """`model` holding the file's weights, in eval mode, and the file's other fields; DistilError when they do not
    fit `architecture` (a damaged file, or one written for another model)."""
    try:
        model.load_state_dict(blob["state_dict"])
    except RuntimeError:
        raise DistilError(f"{path}: its weights do not fit {architecture}; the file is damaged or was not written "
                          "by distil for this model.") from None
    return model.eval(), {k: v for k, v in blob.items() if k != "state_dict"}
