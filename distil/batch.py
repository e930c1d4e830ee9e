"""A batch that knows its sample indices, and the iterators that produce it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from distil.data import IndexedTensorDataset, as_indexed


@dataclass
class Batch:
    """Sample indices, inputs and targets of one batch, and which augmented view of the samples it holds."""

    index: Tensor
    x: Tensor
    y: Tensor
    view: int = 0

    def to(self, device: torch.device) -> Batch:
        """The same batch on `device` (non-blocking when the source is pinned)."""
        return Batch(self.index.to(device, non_blocking=True), self.x.to(device, non_blocking=True),
                     self.y.to(device, non_blocking=True), self.view)


def iterate(dataset: Dataset, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None,
            num_workers: int = 0, pin_memory: bool = False) -> Iterator[Batch]:
    """Yield Batches; tensor datasets are sliced a batch at a time, others go through a DataLoader."""
    dataset = as_indexed(dataset)
    n = len(dataset)
    if isinstance(dataset, IndexedTensorDataset):
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            index = order[start:start + batch_size]
            yield Batch(index, dataset.x[index], dataset.y[index])
        return
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                        num_workers=num_workers, pin_memory=pin_memory,
                        persistent_workers=num_workers > 0)
    for index, x, y in loader:
        yield Batch(torch.as_tensor(index), x, torch.as_tensor(y))


def num_batches(dataset: Dataset, batch_size: int) -> int:
    """How many batches one pass over `dataset` yields."""
    return -(-len(dataset) // batch_size)
