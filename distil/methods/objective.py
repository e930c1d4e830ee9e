"""The distillation objective: a weighted sum of registered loss terms."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from distil.errors import DistilError
from distil.methods.base import Method, Outputs, Pretraining, method_class
from distil.recipe import default_losses


class Objective(nn.Module):
    """Weighted sum of methods; its own parameters (connectors, embeddings) train with the student."""

    def __init__(self, methods: Sequence[Method]) -> None:
        super().__init__()
        self.methods = nn.ModuleList(methods)
        self._names = self.term_names()

    @property
    def needs_teacher(self) -> bool:
        """Whether any term reads the teacher's outputs."""
        return any(m.needs_teacher for m in self.methods)

    def leaves(self) -> list[Method]:
        """Every Method inside the objective, wrapped ones included (wrappers pass their hooks through this)."""
        return [m for m in self.modules() if isinstance(m, Method)]

    def student_taps(self) -> list[str]:
        """The student features any term reads (module paths, sorted)."""
        return sorted({tap for m in self.leaves() for tap in m.student_taps()})

    def teacher_taps(self) -> list[str]:
        """The teacher features any term reads (module paths, sorted)."""
        return sorted({tap for m in self.leaves() for tap in m.teacher_taps()})

    @property
    def needs_probe(self) -> bool:
        """Whether the engine must run a probe batch before training: a term taps features or builds parameters."""
        return bool(self.student_taps() or self.teacher_taps()) or any(
            type(m).prepare is not Method.prepare for m in self.leaves())

    def prepare(self, student: Outputs, teacher: Outputs | None, num_samples: int) -> None:
        """Let every term build its parameters from a probe batch, after checking the tapped features arrived."""
        for role, out, taps in (("student", student, self.student_taps()), ("teacher", teacher, self.teacher_taps())):
            missing = [t for t in taps if out is None or t not in out.features]
            if missing:
                raise DistilError(f"distill.losses: the {role}'s outputs lack the feature '{missing[0]}' a loss reads; "
                                  f"with a teacher cache, build it with the same losses (the cache stores the taps).")
        for m in self.leaves():
            m.prepare(student, teacher, num_samples)

    def pretrainings(self, student: nn.Module) -> list[tuple[str, Pretraining]]:
        """(term name, stage) for every term that runs a stage of its own before distillation."""
        stages = []
        for name, method in zip(self.term_names(), self.methods):
            for m in (x for x in method.modules() if isinstance(x, Method)):
                plan = m.pretraining(student)
                if plan is not None and plan.epochs > 0:
                    stages.append((name, plan))
        return stages

    def sgd_parameters(self) -> list:
        """The parameters terms want trained by plain SGD (Method.sgd_parameters)."""
        return [p for m in self.leaves() for p in m.sgd_parameters()]

    def term_names(self) -> list[str]:
        """A unique name per term (`kd`, or `kd_1` when a method appears twice)."""
        names, seen = [], {}
        for m in self.methods:
            count = seen.get(m.name, 0)
            names.append(m.name if count == 0 else f"{m.name}_{count}")
            seen[m.name] = count + 1
        return names

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the weighted total and each unweighted term (detached), keyed by term name.

        The teacher's tensors are detached first: no term can send gradients into the teacher."""
        if teacher is not None and (teacher.logits.requires_grad or teacher.features):
            teacher = Outputs(teacher.logits.detach(), {k: v.detach() for k, v in teacher.features.items()},
                              teacher.index)
        total, terms = None, {}
        for name, method in zip(self._names, self.methods):
            value = method(student, teacher, target)
            weighted = method.weight * value
            total = weighted if total is None else total + weighted
            terms[name] = value.detach()
        if total is None:
            raise DistilError("the objective has no loss terms; list at least one in distill.losses.")
        return total, terms


def build_objective(terms: Sequence) -> Objective:
    """Build the Objective from recipe loss terms (objects with .name, .weight, .params and optionally .ratio)."""
    return Objective([method_class(t.name)(weight=t.weight, ratio=getattr(t, "ratio", None), **t.params)
                      for t in terms])


def default_methods() -> list[Method]:
    """The default objective's terms (recipe.default_losses) as methods: what the Python API uses given no losses."""
    return list(build_objective(default_losses()).methods)
