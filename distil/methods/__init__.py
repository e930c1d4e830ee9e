"""Distillation losses, one family a file, all in one registry (`distil methods` lists it)."""

from __future__ import annotations

from collections.abc import Sequence

from distil.errors import DistilError
from distil.methods import contrastive, feature, logits, relation, sequence, tree  # noqa: F401  (register them)
from distil.methods.base import REGISTRY, Method, Outputs, method_class, parse_params, register
from distil.methods.logits import CE, KD, MSELogits
from distil.methods.objective import Objective, build_objective
from distil.plugins import load as load_plugins
from distil.recipe import Recipe, add_check

__all__ = [
    "CE", "KD", "MSELogits", "Method", "Objective", "Outputs", "REGISTRY",
    "build_objective", "describe_methods", "method_class", "register", "teacher_taps", "validate_terms",
]


def validate_terms(terms: Sequence, field: str = "distill.losses") -> None:
    """Check every loss term's name and parameters against the registry, naming the bad field; a term without a
    weight gets its method's default (1, or auto for feature and relation terms)."""
    if not terms:
        raise DistilError(f"{field}: at least one loss term is needed, e.g. {{name: ce, weight: 1}}.")
    for i, term in enumerate(terms):
        cls = method_class(term.name, field=f"{field}.{i}.name")
        parse_params(cls, term.params, field=f"{field}.{i}")
        if term.weight is None:
            term.weight = cls.default_weight
        if term.ratio is not None and term.weight != "auto":
            raise DistilError(f"{field}.{i}.ratio: ratio sizes a `weight: auto` term; set weight: auto or drop ratio.")


@add_check
def check_losses(recipe: Recipe) -> None:
    """Every loss term of a recipe names a registered method with valid parameters (registered as a recipe check)."""
    validate_terms(recipe.distill.losses, field="distill.losses")
    if recipe.compress is not None and recipe.compress.prune is not None:
        validate_terms(recipe.compress.prune.losses, field="compress.prune.losses")


def describe_methods() -> list[dict]:
    """One row per registered method: name, summary, paper and parameters with their defaults."""
    load_plugins("methods")
    rows = []
    for name in sorted(REGISTRY):
        cls = REGISTRY[name]
        params = {
            key: {"default": None if info.is_required() else info.get_default(call_default_factory=True),
                  "required": info.is_required(), "help": info.description or ""}
            for key, info in cls.Params.model_fields.items()
        }
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        rows.append({"name": name, "summary": summary, "paper": cls.paper, "params": params,
                     "needs_teacher": cls.needs_teacher})
    return rows


def teacher_taps(terms: Sequence) -> list[str]:
    """The teacher features recipe loss terms read: what a teacher cache must store besides the logits."""
    return build_objective(terms).teacher_taps()
