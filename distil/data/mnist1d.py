"""`mnist1d`: the MNIST-1D benchmark (4,000 train / 1,000 test 1-D digits of length 40), generated here and cached."""

from __future__ import annotations

import hashlib
import json
import os
import random
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from distil.data.registry import Arrays, register
from distil.extras import require
from distil.recipe import DataConfig

ARRAYS = ("x", "y", "x_test", "y_test")


def cache_dir() -> Path:
    """Where generated datasets are kept: $DISTIL_CACHE_DIR, else ~/.cache/distil."""
    return Path(os.environ.get("DISTIL_CACHE_DIR") or Path.home() / ".cache" / "distil").expanduser()


@register("mnist1d")
def mnist1d(cfg: DataConfig) -> Arrays:
    """MNIST-1D with its own train / test split; x shaped (1, 40), labels 0..9.

    Generated with the package's default arguments, whose fixed seed (42) makes it the standard benchmark;
    never downloaded. Generation takes seconds, so the arrays are cached as an .npz under `cache_dir()`.
    """
    arrays = _generate()
    return Arrays(
        x=arrays["x"][:, None].astype(np.float32),
        y=arrays["y"].astype(np.int64),
        x_test=arrays["x_test"][:, None].astype(np.float32),
        y_test=arrays["y_test"].astype(np.int64),
        class_names=[str(c) for c in range(10)],
    )


def _generate() -> dict[str, np.ndarray]:
    """The MNIST-1D arrays, from the cache when present, else generated (and cached when the folder is writable)."""
    mnist1d = require("mnist1d.data", "data", "data.name 'mnist1d'")
    get_dataset_args, make_dataset = mnist1d.get_dataset_args, mnist1d.make_dataset
    args = get_dataset_args(as_dict=True)
    key = hashlib.sha1(json.dumps({k: v for k, v in args.items() if k != "url"}, sort_keys=True).encode()).hexdigest()
    path = cache_dir() / f"mnist1d-{key[:12]}.npz"
    try:
        with np.load(path, allow_pickle=False) as cached:
            return {name: cached[name] for name in ARRAYS}
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        pass  # absent or unreadable: generate it again
    # make_dataset reseeds Python's and NumPy's global generators; put them back so callers' randomness is untouched.
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(get_dataset_args())
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    arrays = {name: np.asarray(data[name]) for name in ARRAYS}
    _save(path, arrays)
    return arrays


def _save(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write the arrays to a temporary file beside `path`, then rename it; when the cache cannot be written, skip it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    except OSError:
        return
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except OSError:
        pass  # e.g. a full disk: the arrays are used uncached
    finally:
        Path(tmp).unlink(missing_ok=True)
