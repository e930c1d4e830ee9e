"""Where teacher outputs come from. The engine only sees `outputs(batch) -> Outputs`."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from distil.batch import Batch
from distil.methods.base import Outputs


class TeacherSource(Protocol):
    """Anything that gives the teacher's outputs for a batch of indexed samples."""

    def outputs(self, batch: Batch) -> Outputs:
        """Teacher outputs for `batch` (already on the training device)."""
        ...


def freeze(model: nn.Module) -> nn.Module:
    """Put a model in eval mode with no gradients: a teacher never trains, and its BatchNorm stays fixed."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class LiveTeacher:
    """A frozen model run on each batch under inference mode."""

    def __init__(self, model: nn.Module) -> None:
        self.model = freeze(model)

    def outputs(self, batch: Batch) -> Outputs:
        """Run the teacher; the result is cloned out of inference mode so losses may save it for backward."""
        self.model.eval()  # a caller may have toggled train(); the teacher's BatchNorm/dropout stay frozen
        with torch.inference_mode():
            logits = self.model(batch.x)
        return Outputs(logits.clone())
