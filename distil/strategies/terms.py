"""Loss-term wrappers: a registered method seen through a rule that weights, selects or slices what it compares.

A wrapper keeps its method's name, weight and parameters, so the Objective and the schedules treat it as the
method itself. Strategies use them to say which samples and classes a recipe's term applies to.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from distil.methods.base import Method, Outputs

Rule = Callable[[Outputs, Outputs | None, Tensor], Tensor]


class Wrapped(Method):
    """A method seen through a rule; name, weight, ratio, needs_teacher and params are the method's own."""

    def __init__(self, inner: Method) -> None:
        nn.Module.__init__(self)
        self.inner = inner
        self.name = inner.name
        self.paper = inner.paper
        self.needs_teacher = inner.needs_teacher
        self.params = inner.params
        self.ratio = inner.ratio

    @property
    def weight(self) -> float:
        """The wrapped method's weight (one value however deep the wrapping, so schedules reach it)."""
        return self.inner.weight

    @weight.setter
    def weight(self, value: float) -> None:
        self.inner.weight = value

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        """The wrapped method, unchanged (subclasses change what it sees)."""
        return self.inner(student, teacher, target)


def scale_grad(x: Tensor, weights: Tensor) -> Tensor:
    """x unchanged in value, but each sample's gradient multiplied by its weight (weights: one per row)."""
    w = weights.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
    return x.detach() + (x - x.detach()) * w


def sample_weights(rule: str, teacher_logits: Tensor, target: Tensor) -> Tensor:
    """Per-sample weights in [0, 1]: the teacher's top probability (`confidence`) or whether its top class is the
    label (`correctness`; samples without a label, target < 0, keep weight 1)."""
    probs = teacher_logits.detach().float().softmax(-1)
    if rule == "confidence":
        return probs.max(-1).values
    right = (probs.argmax(-1) == target).float()
    return torch.where(target < 0, torch.ones_like(right), right)


class SampleWeighted(Wrapped):
    """Weights the term per sample by a rule on the teacher's outputs.

    The gradient of each sample is scaled by its weight, which equals weighting the per-sample losses for any
    term that averages over samples (KD, MSE on logits, feature losses); the logged value stays unweighted.
    """

    def __init__(self, inner: Method, rule: str) -> None:
        super().__init__(inner)
        self.rule = rule

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        """The method on student outputs whose per-sample gradients carry the weights."""
        w = sample_weights(self.rule, teacher.logits, target)
        scaled = Outputs(scale_grad(student.logits, w), {k: scale_grad(v, w) for k, v in student.features.items()})
        return self.inner(scaled, teacher, target)


def _rows(out: Outputs | None, keep: Tensor) -> Outputs | None:
    if out is None:
        return None
    return Outputs(out.logits[keep], {k: v[keep] for k, v in out.features.items()})


class RowSelect(Wrapped):
    """Applies the term to the samples a rule keeps (e.g. labeled ones, or those the teacher is sure of); zero when
    none is kept."""

    def __init__(self, inner: Method, keep: Rule) -> None:
        super().__init__(inner)
        self.keep = keep

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        """The method on the kept rows only."""
        keep = self.keep(student, teacher, target)
        if not bool(keep.any()):
            return student.logits.sum() * 0.0
        return self.inner(_rows(student, keep), _rows(teacher, keep), target[keep])


def labeled(student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
    """Keep samples that have a label (target >= 0)."""
    return target >= 0


def confident(threshold: float) -> Rule:
    """Keep samples whose teacher top probability reaches `threshold`."""

    def keep(student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        return teacher.logits.detach().float().softmax(-1).max(-1).values >= threshold

    return keep


class Columns(Wrapped):
    """Applies the term to some classes only: both models' logits are cut to `classes` and the targets renumbered
    to their position there (targets outside `classes` become -1)."""

    def __init__(self, inner: Method, classes: Sequence[int], num_classes: int) -> None:
        super().__init__(inner)
        self.register_buffer("classes", torch.as_tensor(list(classes), dtype=torch.long), persistent=False)
        position = torch.full((num_classes,), -1, dtype=torch.long)
        position[self.classes] = torch.arange(len(self.classes))
        self.register_buffer("position", position, persistent=False)

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        """The method on the chosen columns."""
        cut = Outputs(student.logits[:, self.classes], student.features)
        cut_teacher = None if teacher is None else Outputs(teacher.logits[:, self.classes], teacher.features)
        renumbered = torch.where(target >= 0, self.position[target.clamp_min(0)], target)
        return self.inner(cut, cut_teacher, renumbered)
