"""Floor 0: the shapes every layer agrees on. A `Batch` knows its sample indices, a model's result is `Outputs`
(logits + features tapped by module path), and a teacher is a `TeacherSource` (live model, disk cache, ensemble):
the engine never asks which one it has. Imports torch only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


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


@dataclass
class Outputs:
    """What a model produced for a batch: its logits, the features tapped by module path and the sample indices.

    `features` are plain tensors keyed by tap (`layer2`, `layer3.0.relu2:input`, `@embedding`; see distil.taps).
    `index` holds the batch's sample indices (positions in the training set); the engine sets it on the student's
    outputs, for losses that keep per-sample state (CRD's memory bank). Teacher outputs need not carry it.
    """

    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)
    index: Tensor | None = None


@runtime_checkable
class TeacherSource(Protocol):
    """Anything that gives the teacher's outputs for a batch of indexed samples (a live model, a cache, an ensemble).

    Sources that can capture features also offer `tap(paths)`: the module paths the losses read.
    """

    def outputs(self, batch: Batch) -> Outputs:
        """Teacher outputs for `batch` (already on the training device)."""
        ...


def as_outputs(out: Tensor | Outputs) -> Outputs:
    """A model's forward result as Outputs: logits are wrapped; a model may return Outputs (with features) itself."""
    return out if isinstance(out, Outputs) else Outputs(out)

