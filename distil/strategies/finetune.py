"""The `finetune` stage: after distillation, a copy of the student trains on the labels only, with a small learning
rate for a few epochs (the recipe's `finetune: {epochs, lr}`); the report shows it beside the distilled student."""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

from torch import nn

from distil.strategies.schedules import label_terms, scheduled_objective
from distil.strategies.trainer import Trainer

if TYPE_CHECKING:
    from distil.context import RunContext


def finetune(run: RunContext, student: nn.Module) -> nn.Module:
    """Fine-tune a copy of the distilled `student` on the run's labeled training split (models/finetuned.pt)."""
    f = run.recipe.finetune
    objective = scheduled_objective(label_terms(run.recipe.distill.losses))
    return Trainer.for_run(run).fit("finetune", lambda: copy.deepcopy(student), objective, run.splits.train,
                                    epochs=f.epochs, lr=f.lr, role="finetuned", arch=run.recipe.student)
