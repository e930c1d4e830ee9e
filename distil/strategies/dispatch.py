"""Which stages a recipe's `distill.strategy` runs (every strategy but offline, whose stages are the pipeline's)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from distil.strategies.continual import run_continual
from distil.strategies.multi_teacher import run_multi_teacher
from distil.strategies.online import run_online
from distil.strategies.self_distill import run_self
from distil.strategies.tables import Outcome
from distil.strategies.transfer_set import run_transfer_set

if TYPE_CHECKING:
    from distil.pipeline import Run

STRATEGIES = {"multi_teacher": run_multi_teacher, "online": run_online, "self": run_self,
              "transfer_set": run_transfer_set, "continual": run_continual}


def run_strategy(run: Run) -> Outcome:
    """Run the recipe's strategy's stages and return its models (evaluated by the pipeline) and report additions."""
    return STRATEGIES[run.recipe.distill.strategy](run)
