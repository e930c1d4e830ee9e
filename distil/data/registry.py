"""The dataset registry: each built-in dataset is a function DataConfig -> Arrays, registered by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distil import plugins
from distil.errors import DistilError, nearest
from distil.recipe import DataConfig


@dataclass
class Arrays:
    """A dataset as loaded, before limit / split / normalization: labels are 0..K-1, one name per class."""

    x: np.ndarray
    y: np.ndarray
    class_names: list[str]
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    raw_scale: float = 1.0  # x = raw / raw_scale (digits 16, pixels 255): model files take the raw values


Loader = Callable[[DataConfig], Arrays]
_LOADERS: dict[str, Loader] = {}


def register(name: str) -> Callable[[Loader], Loader]:
    """Decorator that makes a loader available as `data.name: <name>`."""

    def add(fn: Loader) -> Loader:
        _LOADERS[name] = fn
        return fn

    return add


SplitLoader = Callable[[DataConfig], Any]
_SPLIT_LOADERS: dict[str, SplitLoader] = {}


def register_splits(name: str) -> Callable[[SplitLoader], SplitLoader]:
    """Decorator for a dataset that builds its own Splits (text: tokenized, not standardized arrays)."""

    def add(fn: SplitLoader) -> SplitLoader:
        _SPLIT_LOADERS[name] = fn
        return fn

    return add


def _known(name: str) -> None:
    """Load the dataset plugins when `name` is not registered yet (text registers its datasets itself)."""
    if name not in _LOADERS and name not in _SPLIT_LOADERS:
        plugins.load("datasets")


def split_loader(name: str) -> SplitLoader | None:
    """The loader of a dataset registered with `register_splits`, or None."""
    _known(name)
    return _SPLIT_LOADERS.get(name)


def get_loader(name: str) -> Loader:
    """The loader registered under `name`, or DistilError naming the closest names."""
    _known(name)
    if name not in _LOADERS:
        raise DistilError(
            f"data.name: unknown dataset '{name}'{nearest(name, available_datasets())}; "
            f"choose one of {', '.join(available_datasets())}."
        )
    return _LOADERS[name]


def available_datasets() -> list[str]:
    """The names `data.name` accepts, sorted."""
    plugins.load("datasets")
    return sorted([*_LOADERS, *_SPLIT_LOADERS])


def require_file(cfg: DataConfig) -> Path:
    """The file `data.path` points to, or DistilError saying it is missing."""
    if cfg.path is None:
        raise DistilError(f"data.path is not set; the '{cfg.name}' dataset reads a file, so set data.path to it.")
    path = Path(cfg.path).expanduser()
    if not path.is_file():
        raise DistilError(f"data.path: file {path} does not exist; set data.path to an existing {cfg.name} file.")
    return path


def encode_labels(labels: np.ndarray, source: str) -> tuple[np.ndarray, list[str]]:
    """Map labels (ints, or strings) to 0..K-1 in sorted order; the class names are the sorted unique labels."""
    labels = np.asarray(labels).reshape(-1)
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise DistilError(f"{source}: the labels are fractional numbers; give integer or string class labels.")
        labels = labels.astype(np.int64)
    elif labels.dtype.kind in "OSU":
        try:
            labels = np.array([int(v) for v in labels], dtype=np.int64)
        except (TypeError, ValueError):
            labels = labels.astype(str)
    values, codes = np.unique(labels, return_inverse=True)
    return codes.astype(np.int64).reshape(-1), [str(v) for v in values]
