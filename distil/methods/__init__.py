"""Distillation losses, one family a file, all in one registry (`distil methods` lists it)."""

from __future__ import annotations

from collections.abc import Sequence

from distil.errors import DistilError
from distil.methods import logits  # noqa: F401  (registers ce, kd, mse_logits)
from distil.methods.base import REGISTRY, Method, Outputs, method_class, parse_params, register
from distil.methods.logits import CE, KD, MSELogits
from distil.methods.objective import Objective, build_objective

__all__ = [
    "CE", "KD", "MSELogits", "Method", "Objective", "Outputs", "REGISTRY",
    "build_objective", "describe_methods", "method_class", "register", "validate_terms",
]


def validate_terms(terms: Sequence, field: str = "distill.losses") -> None:
    """Check every loss term's name and parameters against the registry, naming the bad field."""
    if not terms:
        raise DistilError(f"{field}: at least one loss term is needed, e.g. {{name: ce, weight: 1}}.")
    for i, term in enumerate(terms):
        cls = method_class(term.name, field=f"{field}.{i}.name")
        parse_params(cls, term.params, field=f"{field}.{i}")


def describe_methods() -> list[dict]:
    """One row per registered method: name, summary, paper and parameters with their defaults."""
    rows = []
    for name in sorted(REGISTRY):
        cls = REGISTRY[name]
        params = {
            key: {"default": info.default, "help": info.description or ""}
            for key, info in cls.Params.model_fields.items()
        }
        summary = (cls.__doc__ or "").strip().splitlines()[0]
        rows.append({"name": name, "summary": summary, "paper": cls.paper, "params": params,
                     "needs_teacher": cls.needs_teacher})
    return rows
