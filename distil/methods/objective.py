"""The distillation objective: a weighted sum of registered loss terms."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from distil.methods.base import Method, Outputs, method_class


class Objective(nn.Module):
    """Weighted sum of methods; its own parameters (connectors, embeddings) train with the student."""

    def __init__(self, methods: Sequence[Method]) -> None:
        super().__init__()
        self.methods = nn.ModuleList(methods)

    @property
    def needs_teacher(self) -> bool:
        """Whether any term reads the teacher's outputs."""
        return any(m.needs_teacher for m in self.methods)

    def term_names(self) -> list[str]:
        """A unique name per term (`kd`, or `kd_1` when a method appears twice)."""
        names, seen = [], {}
        for m in self.methods:
            count = seen.get(m.name, 0)
            names.append(m.name if count == 0 else f"{m.name}_{count}")
            seen[m.name] = count + 1
        return names

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the weighted total and each unweighted term (detached), keyed by term name."""
        total = torch.zeros((), device=student.logits.device)
        terms = {}
        for name, method in zip(self.term_names(), self.methods):
            value = method(student, teacher, target)
            total = total + method.weight * value
            terms[name] = value.detach()
        return total, terms


def build_objective(terms: Sequence) -> Objective:
    """Build the Objective from recipe loss terms (objects with .name, .weight, .params)."""
    return Objective([method_class(t.name)(weight=t.weight, **t.params) for t in terms])
