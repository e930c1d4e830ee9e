"""Where teacher outputs come from. The engine only sees `outputs(batch) -> Outputs`."""

from __future__ import annotations

from collections.abc import Iterable
from contextlib import nullcontext

import torch
from torch import nn

from distil.contracts import Batch, Outputs, TeacherSource, as_outputs
from distil.taps import Taps

__all__ = ["LiveTeacher", "TeacherSource", "as_outputs", "freeze"]  # the contracts are re-exported


def freeze(model: nn.Module) -> nn.Module:
    """Put a model in eval mode with no gradients: a teacher never trains, and its BatchNorm stays fixed."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class LiveTeacher:
    """A frozen model run on each batch under inference mode; `taps` (module paths) add its features to the outputs."""

    def __init__(self, model: nn.Module, taps: Iterable[str] = ()) -> None:
        self.model = freeze(model)
        self._modules = list(model.modules())
        self.taps: Taps | None = None
        self.tap(taps)

    def tap(self, taps: Iterable[str]) -> None:
        """Capture these features too (paths checked now) in every `outputs` from now on; hooks live only per call."""
        wanted = set(taps) | set(self.taps.taps if self.taps is not None else ())
        if wanted:
            self.taps = Taps(self.model, wanted, role="teacher", field="distill.losses")

    def outputs(self, batch: Batch) -> Outputs:
        """Run the teacher; the result is cloned out of inference mode so losses may save it for backward."""
        if any(m.training for m in self._modules):  # a caller may have toggled train() on any part of the teacher:
            self.model.eval()                       # its BatchNorm/dropout stay frozen (reading flags costs less)
        with torch.inference_mode(), self.taps if self.taps is not None else nullcontext():
            out = as_outputs(self.model(batch.x))
        features = {**out.features, **self.taps.pop()} if self.taps is not None else out.features
        return Outputs(out.logits.clone(), {k: v.clone() for k, v in features.items()})
