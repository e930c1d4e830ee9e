"""Loss weights and temperatures that change during a stage, and the per-sample weighting rule of a term.

A recipe term may carry `schedule: {weight: {...}, temperature: {...}}` (any float parameter of its method) and
`sample_weight: confidence | correctness`. The engine calls `set_progress(p)` on the objective's modules before
each step; a Scheduled term then sets its weight and parameters to the schedules' values at p.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

from distil.methods import Objective, build_objective
from distil.methods.base import Method, method_class
from distil.recipe import LossTerm, Schedule
from distil.strategies.terms import SampleWeighted, Wrapped


def value_at(schedule: Schedule, progress: float) -> float:
    """The schedule's value at `progress` in [0, 1]."""
    p = min(1.0, max(0.0, progress))
    s = schedule
    if s.kind == "constant":
        return s.start
    if s.kind == "linear":
        return s.start + (s.end - s.start) * p
    if s.kind == "cosine":
        return s.end + (s.start - s.end) * 0.5 * (1 + math.cos(math.pi * p))
    if s.kind == "warmup":
        return s.start + (s.end - s.start) * min(1.0, p / s.warmup)
    return s.start * s.gamma ** sum(p >= m for m in s.milestones)


class Scheduled(Wrapped):
    """A term whose weight and float parameters follow schedules through the stage."""

    def __init__(self, inner: Method, schedules: Mapping[str, Schedule]) -> None:
        super().__init__(inner)
        self.schedules = dict(schedules)
        self.set_progress(0.0)

    def set_progress(self, progress: float) -> None:
        """Move every scheduled value to its value at `progress` (the engine calls this before each step)."""
        for key, schedule in self.schedules.items():
            value = value_at(schedule, progress)
            if key == "weight":
                self.weight = value
            else:
                setattr(self.params, key, value)


def scheduled_objective(terms: Sequence) -> Objective:
    """The Objective of recipe loss terms, with each term's `sample_weight` rule and `schedule` applied."""
    objective = build_objective(terms)
    for i, term in enumerate(terms):
        method = objective.methods[i]
        if getattr(term, "sample_weight", None):
            method = SampleWeighted(method, term.sample_weight)
        if getattr(term, "schedule", None):
            method = Scheduled(method, term.schedule)
        objective.methods[i] = method
    return objective


def label_terms(terms: Sequence[LossTerm]) -> list[LossTerm]:
    """The terms that need no teacher, at weight 1 (plain CE when there are none): how a model learns alone."""
    kept = [LossTerm(name=t.name, weight=1.0, **t.params) for t in terms if not method_class(t.name).needs_teacher]
    return kept or [LossTerm(name="ce")]
