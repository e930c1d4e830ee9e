"""Floor 2: the strategies, the only code that trains. Each arranges teachers, students and data over a RunContext
(distil.context) and calls the one engine; `dispatch.run_strategy` picks the recipe's. The names below load on first
use, so importing one strategy (or the recipe checks) does not import them all."""

from __future__ import annotations

import importlib

_HOMES = {
    "Adversarial": "augment_distill", "CutMix": "augment_distill", "Mixup": "augment_distill",
    "ContinualResult": "continual", "learn_without_forgetting": "continual",
    "Ensemble": "multi_teacher", "EnsembleTeacher": "multi_teacher",
    "DistillResult": "offline", "distill": "offline",
    "MutualResult": "online", "mutual_learning": "online",
    "Scheduled": "schedules", "GenerationsResult": "self_distill", "born_again": "self_distill",
    "SampleWeighted": "terms", "distill_unlabeled": "transfer_set",
}
__all__ = sorted(_HOMES)


def __getattr__(name: str):
    """The public strategy names, imported from their module on first use."""
    if name not in _HOMES:
        raise AttributeError(f"module 'distil.strategies' has no attribute {name!r}")
    return getattr(importlib.import_module(f"distil.strategies.{_HOMES[name]}"), name)
