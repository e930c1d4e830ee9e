"""What every distillation method shares: its outputs contract, parameter validation and the registry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor, nn

from distil.errors import DistilError, nearest


@dataclass
class Outputs:
    """What a model produced for a batch: its logits and the features tapped by module path."""

    logits: Tensor
    features: dict[str, Tensor] = field(default_factory=dict)


class NoParams(BaseModel):
    """A method without parameters of its own."""

    model_config = ConfigDict(extra="forbid")


class Method(nn.Module):
    """A distillation loss term: `forward(student, teacher, target)` returns an unweighted scalar.

    Subclasses set `name`, `paper` and a pydantic `Params` model; `weight` scales the term in the objective.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = True
    Params: ClassVar[type[BaseModel]] = NoParams

    def __init__(self, weight: float = 1.0, **params: Any) -> None:
        super().__init__()
        self.weight = float(weight)
        self.params = parse_params(type(self), params, field=self.name or type(self).__name__)

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError


REGISTRY: dict[str, type[Method]] = {}


def register(name: str):
    """Class decorator adding a Method to the registry under `name` (the name recipes use)."""

    def add(cls: type[Method]) -> type[Method]:
        if name in REGISTRY:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return add


def method_class(name: str, field: str = "name") -> type[Method]:
    """The registered class for `name`, or a DistilError suggesting the nearest names."""
    if name not in REGISTRY:
        raise DistilError(
            f"{field}: unknown loss '{name}'{nearest(name, REGISTRY)}; run `distil methods` for the list."
        )
    return REGISTRY[name]


def parse_params(cls: type[Method], params: dict[str, Any], field: str) -> BaseModel:
    """Validate a method's parameters with its Params model; errors name the field and the valid keys."""
    try:
        return cls.Params.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            valid = ", ".join(cls.Params.model_fields) or "none"
            raise DistilError(f"{field}.{key}: '{cls.name}' has no parameter '{key}' (parameters: {valid}).") from None
        raise DistilError(f"{field}.{key}: {err['msg']}.") from None
