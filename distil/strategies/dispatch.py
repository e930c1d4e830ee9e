"""Which stages a recipe's `distill.strategy` runs: one function per strategy, offline included."""

from __future__ import annotations

from typing import TYPE_CHECKING

from distil.strategies.continual import run_continual
from distil.strategies.multi_teacher import run_multi_teacher
from distil.strategies.offline import run_offline
from distil.strategies.online import run_online
from distil.strategies.self_distill import run_self
from distil.strategies.tables import Outcome
from distil.strategies.transfer_set import run_transfer_set

if TYPE_CHECKING:
    from distil.context import RunContext

STRATEGIES = {"offline": run_offline, "multi_teacher": run_multi_teacher, "online": run_online, "self": run_self,
              "transfer_set": run_transfer_set, "continual": run_continual}


def run_strategy(run: RunContext) -> Outcome:
    """Run the recipe's strategy's stages and return its models (evaluated by the pipeline) and report additions."""
    return STRATEGIES[run.recipe.distill.strategy](run)
