"""The iterators that produce Batches (the contract itself lives in distil.contracts and is re-exported here)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from distil.contracts import Batch, TensorDict
from distil.data.indexed import IndexedTensorDataset, as_indexed

__all__ = ["Batch", "TensorDict", "iterate", "num_batches", "shard_index", "take"]


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
            yield Batch(index, take(dataset.x, index), take(dataset.y, index))
        return
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=generator,
                        num_workers=num_workers, pin_memory=pin_memory,
                        persistent_workers=num_workers > 0)
    for index, x, y in loader:
        part = shard_index(torch.arange(len(index)), *shard)
        yield Batch(torch.as_tensor(index)[part], x[part], torch.as_tensor(y)[part])


def take(tensor: Tensor, index: Tensor) -> Tensor:
    """The rows `index` of `tensor`: index_select (a third of advanced indexing's cost on small batches) when both
    are on one device."""
    return tensor.index_select(0, index) if tensor.device == index.device else tensor[index]


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
