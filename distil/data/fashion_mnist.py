"""`fashion_mnist`: Zalando's 70,000 28x28 clothing images, read from local IDX files (never downloaded)."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import numpy as np

from distil.data.registry import Arrays, register
from distil.errors import DistilError
from distil.recipe import DataConfig

DEFAULT_DIR = Path("/usr/share/datasets/fashion-mnist")  # where Debian's dataset-fashion-mnist package puts them
FILES = {
    "x": "train-images-idx3-ubyte",
    "y": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"]
UBYTE = 0x08


@register("fashion_mnist")
def fashion_mnist(cfg: DataConfig) -> Arrays:
    """The IDX files in `data.path` (default: Debian's folder): (1, 28, 28) images in [0, 1], their own test split."""
    root = Path(cfg.path).expanduser() if cfg.path else DEFAULT_DIR
    files = find_idx_files(root)
    if files is None:
        raise DistilError(
            f"Fashion-MNIST IDX files not found in {root}; install Debian's dataset-fashion-mnist "
            "(apt-get install dataset-fashion-mnist) or set data.path to a folder holding them."
        )
    arrays = {key: read_idx(path) for key, path in files.items()}
    for images, labels in (("x", "y"), ("x_test", "y_test")):
        if arrays[images].ndim != 3 or arrays[labels].ndim != 1 or len(arrays[images]) != len(arrays[labels]):
            raise DistilError(
                f"{files[images]} ({arrays[images].shape}) and {files[labels]} ({arrays[labels].shape}) do not hold "
                "one label per 2-D image; replace them with an intact Fashion-MNIST copy."
            )
    return Arrays(
        x=arrays["x"][:, None].astype(np.float32) / 255.0,
        y=arrays["y"].astype(np.int64),
        x_test=arrays["x_test"][:, None].astype(np.float32) / 255.0,
        y_test=arrays["y_test"].astype(np.int64),
        class_names=list(CLASS_NAMES),
        raw_scale=255.0,
    )


def find_idx_files(root: Path) -> dict[str, Path] | None:
    """The four IDX files (each plain or .gz) in `root` or in one of its sub-folders, or None when no folder has all."""
    try:
        folders = [root, *sorted(p for p in root.iterdir() if p.is_dir())] if root.is_dir() else []
    except OSError:
        folders = [root]
    for folder in folders:
        found = {key: _either(folder / name, folder / f"{name}.gz") for key, name in FILES.items()}
        if all(found.values()):
            return found
    return None


def _either(*paths: Path) -> Path | None:
    """The first of `paths` that is a file."""
    return next((p for p in paths if p.is_file()), None)


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (optionally gzipped) as a uint8 array, or DistilError naming the file."""
    fix = "replace it with an intact copy (apt-get install --reinstall dataset-fashion-mnist) or change data.path"
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as exc:
        raise DistilError(f"{path} cannot be read as an IDX file ({exc}); {fix}.") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != UBYTE:
        raise DistilError(f"{path} is not an IDX file of unsigned bytes (bad magic number); {fix}.")
    header = 4 + 4 * raw[3]
    if len(raw) < header:
        raise DistilError(f"{path} is truncated inside its IDX header; {fix}.")
    dims = struct.unpack(f">{raw[3]}I", raw[4:header])
    if len(raw) - header != math.prod(dims):
        raise DistilError(f"{path} holds {len(raw) - header} data bytes but its header says {math.prod(dims)}; {fix}.")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(dims)
