"""Datasets whose items carry their own position: item i is (i, x, y), so a batch knows its sample indices."""

from __future__ import annotations

import operator
from typing import Any

from torch import Tensor
from torch.utils.data import Dataset, TensorDataset

from distil.errors import DistilError


class IndexedTensorDataset(Dataset):
    """Samples held as tensors; item i is (i, x[i], y[i]); also indexable by a LongTensor of indices (fast batches)."""

    def __init__(self, x: Tensor, y: Tensor) -> None:
        if x.shape[0] != y.shape[0]:
            raise DistilError(f"{x.shape[0]} inputs but {y.shape[0]} targets; give exactly one target per sample.")
        self.x = x
        self.y = y

    def __len__(self) -> int:
        """The number of samples."""
        return self.x.shape[0]

    def __getitem__(self, i: int | Tensor) -> tuple[Any, Tensor, Tensor]:
        """(i, x[i], y[i]) for an int; (idx, x[idx], y[idx]) for a LongTensor of indices."""
        if isinstance(i, Tensor) and i.dim() > 0:
            return i, self.x[i], self.y[i]
        index = operator.index(i)
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} is out of range for a dataset of {n} samples")
        index %= n
        return index, self.x[index], self.y[index]


class IndexedDataset(Dataset):
    """Wraps any dataset of (x, y) so that item i is (i, x, y)."""

    def __init__(self, base: Any) -> None:
        self.base = base

    def __len__(self) -> int:
        """The number of samples of the wrapped dataset."""
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[int, Any, Any]:
        """(i, x, y) where (x, y) is item i of the wrapped dataset."""
        index = operator.index(i)
        if index < 0:
            index += len(self)
        item = self.base[index]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise DistilError(f"dataset item {index} is not an (x, y) pair; give a dataset of (inputs, target) items.")
        return index, item[0], item[1]


def as_indexed(ds: Any) -> Dataset:
    """A dataset whose items are (index, x, y): indexed datasets pass through, (x, y) datasets are wrapped."""
    if isinstance(ds, (IndexedTensorDataset, IndexedDataset)):
        return ds
    if isinstance(ds, TensorDataset) and len(ds.tensors) == 2:
        return IndexedTensorDataset(*ds.tensors)
    return IndexedDataset(ds)
