"""From a registered dataset to train / val / test splits: limit, seeded stratified split, train-only normalization."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from distil.data.indexed import IndexedTensorDataset
from distil.data.registry import Arrays, get_loader, split_loader
from distil.errors import DistilError
from distil.preprocess import identity_spec, standardize_spec
from distil.recipe import DataConfig


@dataclass
class Splits:
    """The train / val / test splits of one dataset, plus what a model must know about its inputs and classes."""

    train: IndexedTensorDataset
    val: IndexedTensorDataset
    test: IndexedTensorDataset
    num_classes: int
    input_shape: tuple[int, ...]
    class_names: list[str]
    name: str
    preprocess: dict = field(default_factory=dict)  # what turned raw inputs into these (distil.preprocess kinds)


def load_dataset(cfg: DataConfig, seed: int | None = None) -> Splits:
    """Load the dataset `cfg.name`, then limit, split and normalize it as `cfg` says.

    A dataset with its own test split (mnist1d, fashion_mnist, an npz with x_test) keeps it, `test_fraction`
    unused, and `limit` takes the same share from both; val is then `val_fraction` of the train part.

    The splits depend on `cfg` alone (its `split_seed`), never on the run's `seed`: every run of a recipe,
    whatever its seed, sees the same samples at the same indices, so teacher caches and comparisons line up.
    """
    own_splits = split_loader(cfg.name)
    if own_splits is not None:  # e.g. text datasets, tokenized into their own splits (distil.text)
        return own_splits(cfg)
    raw = get_loader(cfg.name)(cfg)
    _check(raw, f"data.path: {cfg.path}" if cfg.path else f"dataset '{cfg.name}'")
    if raw.x_test is None or raw.y_test is None:
        x, y = _limit(raw.x, raw.y, cfg.limit, cfg.split_seed)
        n_test = max(1, round(cfg.test_fraction * len(y)))
        pool, test = split_off(np.arange(len(y)), y, n_test, cfg.split_seed)
        x_test, y_test = x[test], y[test]
    else:
        n_train, n_test = _limit_pair(len(raw.y), len(raw.y_test), cfg.limit)
        x, y = _limit(raw.x, raw.y, n_train, cfg.split_seed)
        x_test, y_test = _limit(raw.x_test, raw.y_test, n_test, cfg.split_seed)
        pool = np.arange(len(y))
    n_val = min(round(cfg.val_fraction * len(y)), len(pool) - 1)
    train, val = split_off(pool, y, n_val, cfg.split_seed)
    parts = [x[train], x[val], x_test]
    preprocess = identity_spec(parts[0], raw.raw_scale)
    if cfg.normalize:
        parts, mean, std = _standardize(*parts)
        preprocess = standardize_spec(x[train], mean, std, raw.raw_scale)
    x_train, x_val, x_test = (torch.from_numpy(np.ascontiguousarray(p, dtype=np.float32)) for p in parts)
    return Splits(
        train=IndexedTensorDataset(x_train, torch.from_numpy(y[train])),
        val=IndexedTensorDataset(x_val, torch.from_numpy(y[val])),
        test=IndexedTensorDataset(x_test, torch.from_numpy(y_test)),
        num_classes=len(raw.class_names),
        input_shape=tuple(x_train.shape[1:]),
        class_names=list(raw.class_names),
        name=cfg.name,
        preprocess=preprocess,
    )


MIN_TEST_SAMPLES = 20  # below this, one test sample moves top-1 by more than 5 points


def check_splits(splits: Splits) -> list[str]:
    """DistilError when the data cannot train a classifier (one class); warnings for the report when the test split
    is too small to measure anything."""
    present = torch.unique(splits.train.y[splits.train.y >= 0]) if len(splits.train) else torch.zeros(0)
    if len(present) < 2:
        found = f"only class '{splits.class_names[int(present[0])]}'" if len(present) else "no labeled sample"
        raise DistilError(f"data '{splits.name}': the training split holds {found}; a classifier needs samples of at "
                          "least two classes: check the labels (or data.limit).")
    n = len(splits.test)
    if n < MIN_TEST_SAMPLES:
        return [f"the test split holds only {n} sample{'s' if n != 1 else ''}, so each one moves top-1 by "
                f"{100 / max(n, 1):.0f} points and the comparison means little; use more data or a larger "
                "data.test_fraction."]
    return []


def _check(raw: Arrays, source: str) -> None:
    """Raise DistilError when a loaded dataset is inconsistent: lengths, label range, non-finite inputs."""
    pairs = [("x", raw.x, "y", raw.y)]
    if raw.x_test is not None or raw.y_test is not None:
        if raw.x_test is None or raw.y_test is None:
            raise DistilError(f"{source}: x_test and y_test must be given together; give both or neither.")
        pairs.append(("x_test", raw.x_test, "y_test", raw.y_test))
        if raw.x_test.shape[1:] != raw.x.shape[1:]:
            raise DistilError(
                f"{source}: x_test samples are shaped {raw.x_test.shape[1:]} but x samples {raw.x.shape[1:]}; "
                "give both the same sample shape."
            )
    k = len(raw.class_names)
    for xname, x, yname, y in pairs:
        if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
            raise DistilError(
                f"{source}: {xname} is shaped {x.shape} and {yname} {y.shape}; "
                f"give {xname} as (samples, features...) and {yname} as one label per sample."
            )
        if len(y) and (y.min() < 0 or y.max() >= k):
            raise DistilError(f"{source}: {yname} has labels outside 0..{k - 1}; give one name per class.")
        if not np.all(np.isfinite(x)):
            raise DistilError(f"{source}: {xname} holds NaN or infinite values; clean or impute them first.")


def stratified_subset(y: np.ndarray, n: int | None, seed: int) -> np.ndarray:
    """Indices (in order) of a stratified seeded subset of n samples; the first n when stratifying is impossible."""
    if n is None or n >= len(y):
        return np.arange(len(y))
    from sklearn.model_selection import train_test_split  # late import: scikit-learn takes seconds to import

    try:
        keep, _ = train_test_split(np.arange(len(y)), train_size=n, stratify=y, random_state=seed)
    except ValueError:
        return np.arange(n)
    return np.sort(keep)


def _limit(x: np.ndarray, y: np.ndarray, n: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """x and y cut down to a stratified subset of n samples (all when n is None)."""
    keep = stratified_subset(y, n, seed)
    return x[keep], y[keep]


def _limit_pair(n_train: int, n_test: int, limit: int | None) -> tuple[int | None, int | None]:
    """How many train and test samples a `limit` keeps when a dataset has its own test split: the same proportion."""
    if limit is None or limit >= n_train + n_test:
        return None, None
    keep_train = min(n_train, max(1, round(limit * n_train / (n_train + n_test))))
    return keep_train, min(n_test, max(1, limit - keep_train))


def split_off(idx: np.ndarray, y: np.ndarray, n_out: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split idx into (kept, n_out taken), stratified by y when possible, each in ascending order."""
    if n_out <= 0:
        return idx, idx[:0]
    from sklearn.model_selection import train_test_split  # late import: scikit-learn takes seconds to import

    try:
        keep, out = train_test_split(idx, test_size=n_out, stratify=y[idx], random_state=seed)
    except ValueError:
        keep, out = train_test_split(idx, test_size=n_out, random_state=seed)
    return np.sort(keep), np.sort(out)


def _standardize(train: np.ndarray, *others: np.ndarray) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Standardize every array with the train array's mean / std: per channel for (C, ...) samples, else per feature
    (the arrays, then the mean and std, keepdims)."""
    axes = (0,) if train.ndim == 2 else (0, *range(2, train.ndim))
    mean = train.mean(axis=axes, keepdims=True, dtype=np.float64)
    std = train.std(axis=axes, keepdims=True, dtype=np.float64)
    std[std == 0] = 1.0
    mean, std = mean.astype(np.float32), std.astype(np.float32)
    return [(a.astype(np.float32, copy=False) - mean) / std for a in (train, *others)], mean, std
