"""A batch that knows its sample indices, and the iterators that produce it."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from distil.data import IndexedTensorDataset, as_indexed


class TensorDict(dict):
    """Named input tensors of one batch (e.g. token ids + attention mask) that move together like one tensor.

    `Batch.x` is a Tensor for images / tables, or a TensorDict for inputs with several parts (text); models then
    receive the TensorDict itself as `model(x)`.
    """

    def to(self, device: torch.device, non_blocking: bool = False) -> TensorDict:
        """Every tensor on `device`."""
        return TensorDict({k: v.to(device, non_blocking=non_blocking) for k, v in self.items()})

    @property
    def device(self) -> torch.device:
        """The device of the (first) tensor."""
        return next(iter(self.values())).device


@dataclass
class Batch:
    """Sample indices, inputs and targets of one batch, and which augmented view of the samples it holds."""

    index: Tensor
    x: Tensor | TensorDict
    y: Tensor
    view: int = 0

    def to(self, device: torch.device) -> Batch:
        """The same batch on `device` (non-blocking when the source is pinned)."""
        return Batch(self.index.to(device, non_blocking=True), self.x.to(device, non_blocking=True),
                     self.y.to(device, non_blocking=True), self.view)


def iterate(dataset: Dataset, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None,
            num_workers: int = 0, pin_memory: bool = False, shard: tuple[int, int] = (0, 1)) -> Iterator[Batch]:
    """Yield Batches; tensor datasets are sliced a batch at a time, others go through a DataLoader.

    `shard=(rank, world)` splits every global batch of `batch_size` into `world` contiguous parts and yields
    part `rank`, so data-parallel processes see disjoint samples and the same number of steps.
    """
    if hasattr(dataset, "iter_batches"):  # a dataset that batches itself (text: dynamic padding, length buckets)
        yield from dataset.iter_batches(batch_size, shuffle=shuffle, generator=generator, shard=shard)
        return
    dataset = as_indexed(dataset)
    n = len(dataset)
    if isinstance(dataset, IndexedTensorDataset):
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        for start in range(0, n, batch_size):
            index = shard_index(order[start:start + batch_size], *shard)
            yield Batch(index, dataset.x[index], dataset.y[index])
        return
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                        num_workers=num_workers, pin_memory=pin_memory,
                        persistent_workers=num_workers > 0)
    for index, x, y in loader:
        part = shard_index(torch.arange(len(index)), *shard)
        yield Batch(torch.as_tensor(index)[part], x[part], torch.as_tensor(y)[part])


def shard_index(index: Tensor, rank: int, world: int) -> Tensor:
    """Part `rank` of `world` of a global batch; a last batch smaller than `world` is repeated so no part is empty."""
    if world <= 1:
        return index
    if len(index) < world:
        index = index.repeat(-(-world // len(index)))[:world]
    return index.tensor_split(world)[rank]


def num_batches(dataset: Dataset, batch_size: int) -> int:
    """How many batches one pass over `dataset` yields."""
    return -(-len(dataset) // batch_size)
