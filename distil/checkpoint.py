"""Atomic, checksummed saving and loading of training checkpoints and of self-describing model files.

Files are data, never code: every file `save` writes holds tensors and plain containers only (dicts, lists,
strings, numbers) as a torch.save payload, and `load` reads it with `torch.load(weights_only=True)`, whose
allow-listed unpickler refuses any other object, so a planted pickle cannot run. Model files keep their metadata
as one JSON string. The payload is followed by an 80-byte trailer holding its SHA-256 (torch.load ignores bytes
after the zip archive, so plain `torch.load` still reads it); `load` requires and checks it, so a truncated,
damaged or foreign file is refused before it is used. Training checkpoints keep the previous good one beside
them (`<stage>.prev.ckpt`), which `load_checkpoint` falls back to.

In a distributed run only rank 0 writes: on any other rank `write_atomically` does nothing.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import logging
import os
import pickle
import signal
import tempfile
from collections import OrderedDict
from collections.abc import Callable, Collection
from pathlib import Path
from typing import IO, Any

try:  # POSIX: temp files of live writers are locked (_hold)
    import fcntl
except ImportError:  # Windows: no lock, every leftover temp file is cleaned
    fcntl = None

import torch
from torch import nn

from distil import distributed
from distil.errors import DistilError
from distil.models import build_model
from distil.models.user import PREFIX
from distil.recipe import ModelConfig

TRAILER_TAG = b"\nDISTIL-SHA256 "
TRAILER_SIZE = len(TRAILER_TAG) + 64 + 1
MODEL_FORMAT = "distil-model-2"  # the tag of a file written by save_model: weights + metadata as JSON text
OLD_MODEL_FORMAT = "distil-model-1"  # the same fields as plain data beside the weights: still loaded (data only)
REQUIRED_METADATA = ("config", "input_shape", "num_classes", "class_names")
CRASH_ENV = "DISTIL_CRASH_AT"  # tests only: "<point>:<n>" kills this process (SIGKILL) inside its n-th `save`

log = logging.getLogger("distil")


def _file_mode() -> int:
    """What open() would give a new file under this process's umask (read once, at import)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


FILE_MODE = _file_mode()
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
    if not distributed.is_main():
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    _hold(fd)  # a live writer's temp file is locked: another writer's cleanup below leaves it alone
    try:
        os.chmod(tmp, FILE_MODE)  # mkstemp's 0600 would make report.html and the models unreadable to others
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
        if not _held_by_another(stale):
            stale.unlink(missing_ok=True)


def _hold(fd: int) -> None:
    """Lock a temp file for as long as its writer has it open (the lock dies with the process)."""
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _held_by_another(path: Path) -> bool:
    """Whether a live writer still holds `path` (a temp file of a concurrent write, not one left by a crash)."""
    if fcntl is None:
        return False
    try:
        with path.open("rb") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:  # gone already, or unreadable: nothing to keep
        return False
    return False


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
    """The payload of a file `save` wrote, after checking its checksum; DistilError when missing, cut or damaged."""
    path = Path(path)
    if not path.is_file():
        raise DistilError(f"{path} does not exist; give the path of a file written by distil (a run's "
                          "models/*.pt or checkpoints/*.ckpt).")
    data = path.read_bytes()
    trailer = data[-TRAILER_SIZE:]
    if not trailer.startswith(TRAILER_TAG):
        raise DistilError(f"{path} is truncated or corrupt, or was not written by distil (it has no checksum "
                          "trailer; a bare torch.save file has none); use a file a distil run wrote, or save a "
                          "model with distil.checkpoint.save_model.")
    payload = data[:-TRAILER_SIZE]
    if hashlib.sha256(payload).hexdigest().encode("ascii") != trailer[len(TRAILER_TAG):-1]:
        raise DistilError(f"{path} is truncated or corrupt (SHA-256 mismatch); use an intact copy or rerun the "
                          "stage that wrote it.")
    return payload


def load(path: Path) -> Any:
    """The tensors and plain data of a file this package wrote (checksum checked), or a DistilError naming it.

    torch.load runs with weights_only=True: a payload holding any other object (a pickle that could run code) is
    refused without being executed.
    """
    payload = verify(path)
    try:
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise DistilError(f"{path} holds objects other than tensors and plain data (a pickle that could run "
                          "code, or a training checkpoint from an older distil), so distil will not open it; "
                          "use a file this distil version wrote (rerun the run, or delete its checkpoints/ "
                          "folder and resume).") from None
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise DistilError(f"{path} is corrupt or not a distil file (torch.load raised {type(exc).__name__}); use "
                          "a file distil wrote.") from None


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


def model_metadata(*, config: dict, input_shape: tuple[int, ...], num_classes: int, class_names: list[str],
                   extra: dict | None = None, **more: Any) -> dict:
    """The metadata of a model file as a JSON-able dict; DistilError naming the field that JSON cannot hold."""
    meta = {"config": config, "input_shape": list(input_shape), "num_classes": int(num_classes),
            "class_names": [str(c) for c in class_names], "extra": extra or {}, **more}
    for key, value in meta.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError) as exc:
            raise DistilError(f"model metadata field '{key}' is not plain JSON data ({exc}); store numbers, "
                              "strings, lists and dicts only (arrays as lists).") from None
    return meta


def save_weights(path: Path, state_dict: dict, meta: dict, *, fmt: str = MODEL_FORMAT) -> None:
    """Save a model file: its tensors plus `meta` (a dict from `model_metadata`) as JSON text, checksummed."""
    weights = OrderedDict((k, v.detach().cpu() if isinstance(v, torch.Tensor) else v) for k, v in state_dict.items())
    if hasattr(state_dict, "_metadata"):  # module versions: quantized modules read them on load
        weights._metadata = state_dict._metadata
    save(path, {"format": fmt, "metadata": json.dumps(meta), "state_dict": weights})


def read_model_file(path: Path, formats: tuple[str, ...] = (MODEL_FORMAT,)) -> tuple[dict, dict]:
    """(metadata, state dict) of a model file whose format is one of `formats`; DistilError for any other file."""
    path = Path(path)
    blob = load(path)
    old = {MODEL_FORMAT: OLD_MODEL_FORMAT}
    known = {*formats, *(old[f] for f in formats if f in old)}
    if not isinstance(blob, dict) or blob.get("format") not in known or not isinstance(blob.get("state_dict"), dict):
        raise DistilError(f"{path} is not a distil model file; use a models/*.pt file from a run folder.")
    try:
        meta = json.loads(blob["metadata"]) if "metadata" in blob else \
            {k: v for k, v in blob.items() if k not in {"format", "state_dict"}}
    except (TypeError, ValueError) as exc:
        raise DistilError(f"{path}: its metadata is not valid JSON ({type(exc).__name__}); use an intact model "
                          "file from a run folder.") from None
    missing = [key for key in REQUIRED_METADATA if not isinstance(meta, dict) or key not in meta]
    if missing:
        raise DistilError(f"{path}: its metadata lacks {', '.join(missing)}; the file is damaged or was not "
                          "written by distil: use a models/*.pt file from a run folder.")
    meta.setdefault("extra", {})
    meta["format"] = blob["format"]
    return meta, blob["state_dict"]


def save_model(path: Path, model: nn.Module, *, config: dict, input_shape: tuple[int, ...], num_classes: int,
               class_names: list[str], extra: dict | None = None, **more: Any) -> None:
    """Save weights with what rebuilds the architecture (model config, input shape, classes) as JSON metadata.

    `extra` is any JSON-able dict (the run, the role); `more` are further JSON-able fields: `preprocess` (the
    distil.preprocess spec that turns raw inputs into model inputs) and `data` (the recipe's data section).
    """
    meta = model_metadata(config=config, input_shape=input_shape, num_classes=num_classes,
                          class_names=class_names, extra=extra, **more)
    save_weights(path, model.state_dict(), meta)


def load_model(path: Path, *, trust_code: bool | Collection[str] = False) -> tuple[nn.Module, dict]:
    """Rebuild a model saved by `save_model`; returns the model (eval mode, CPU) and the file's metadata.

    A file naming a `python:` factory is built only with `trust_code`: True, or names that include that factory's.
    """
    meta, state = read_model_file(path)
    model = build_from_metadata(Path(path), meta, trust_code=trust_code)
    return with_weights(model, state, meta, Path(path), f"the architecture it names ({meta['config'].get('name')})")


def build_from_metadata(path: Path, meta: dict, *, trust_code: bool | Collection[str] = False) -> nn.Module:
    """A fresh model of the architecture a model file's metadata names; DistilError when it is damaged, or when
    it names a `python:` factory (which would import and run code) that `trust_code` does not allow."""
    try:
        config = ModelConfig.model_validate(meta["config"])
        shape, classes = tuple(int(side) for side in meta["input_shape"]), int(meta["num_classes"])
    except (ValueError, TypeError, AttributeError) as exc:
        raise DistilError(f"{path}: its metadata does not describe a model distil can build "
                          f"({type(exc).__name__}); use an intact model file from a run folder.") from None
    if config.name.startswith("checkpoint:"):
        raise DistilError(f"{path}: its metadata names another file ('{config.name}') as its architecture; a model "
                          "file must name a zoo model: use a models/*.pt file from a run folder.")
    if config.name.startswith(PREFIX) and not (trust_code is True or (trust_code and config.name in trust_code)):
        raise DistilError(f"{path} names the factory '{config.name}', which would import and run Python code to "
                          "build the model; if you wrote the file and trust it, load it in Python with "
                          "distil.load(path, trust_code=True), or `distil eval/export --trust-code`.")
    return build_model(config, shape, classes)


def with_weights(model: nn.Module, state: dict, meta: dict, path: Path, architecture: str) -> tuple[nn.Module, dict]:
    """`model` holding the file's weights, in eval mode, and the file's metadata; DistilError when they do not
    fit `architecture` (a damaged file, or one written for another model)."""
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError):
        raise DistilError(f"{path}: its weights do not fit {architecture}; the file is damaged or was not written "
                          "by distil for this model.") from None
    return model.eval(), meta
