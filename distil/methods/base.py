"""What every distillation method shares: its outputs contract, its hooks into the engine, parameter validation and
the registry."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, ValidationError
from torch import Tensor, nn

from distil import plugins
from distil.contracts import Outputs
from distil.errors import DistilError, nearest


@dataclass
class Pretraining:
    """A stage a method runs before distillation (FT's paraphraser, AB's initialisation).

    The engine trains `parameters` for `epochs` passes over the training data, minimising
    `loss(student_out, teacher_out, target)` (student_out is None when `needs_student` is False), logged as the
    stage `<stage>:<term>`; afterwards each parameter's `requires_grad` is what it was before.
    """

    epochs: int
    parameters: list[nn.Parameter]
    loss: Callable[[Outputs | None, Outputs, Tensor], Tensor]
    needs_student: bool = True


class NoParams(BaseModel):
    """A method without parameters of its own."""

    model_config = ConfigDict(extra="forbid")


class Method(nn.Module):
    """A distillation loss term: `forward(student, teacher, target)` returns an unweighted scalar.

    Subclasses set `name`, `paper` and a pydantic `Params` model; `weight` scales the term in the objective.
    `weight="auto"` (the default of terms whose size depends on the model: `default_weight`) leaves the weight to
    the engine, which sets it before training so the term's gradient on the student is `ratio` times the label
    loss's (distil.calibrate.balance); `ratio` is None for a fixed weight.
    Hooks the engine calls, all optional:
    - `student_taps()` / `teacher_taps()`: the features (module paths) the term reads; the engine captures them
      into `Outputs.features` of both models. No taps anywhere: no hooks and no probe run.
    - `prepare(student, teacher, num_samples)`: once, on a probe batch before the optimizer is built, so the term
      can create its parameters (connectors, embeddings, memory banks) from the real feature shapes.
    - `pretraining(student)`: a stage of its own before distillation, or None.
    - `set_progress(p)`: before every step, p in [0, 1) being how far through the stage training is.
    """

    name: ClassVar[str] = ""
    paper: ClassVar[str] = ""
    needs_teacher: ClassVar[bool] = True
    Params: ClassVar[type[BaseModel]] = NoParams
    default_weight: ClassVar[float | Literal["auto"]] = 1.0

    def __init__(self, weight: float | Literal["auto"] | None = None, ratio: float | None = None,
                 **params: Any) -> None:
        super().__init__()
        weight = self.default_weight if weight is None else weight
        if weight != "auto" and ratio is not None:
            raise DistilError(f"{self.name}: ratio sets the size of a `weight: auto` term; give weight: auto or "
                              "drop ratio.")
        self.ratio = (1.0 if ratio is None else float(ratio)) if weight == "auto" else None
        self.weight = 1.0 if weight == "auto" else float(weight)
        self.params = parse_params(type(self), params, field=self.name or type(self).__name__)

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def student_taps(self) -> list[str]:
        """Taps of the student this term reads from `student.features`."""
        return []

    def teacher_taps(self) -> list[str]:
        """Taps of the teacher this term reads from `teacher.features`."""
        return []

    def prepare(self, student: Outputs, teacher: Outputs | None, num_samples: int) -> None:
        """Build parameters from a probe batch's outputs (no gradients) and the training-set size."""

    def pretraining(self, student: nn.Module) -> Pretraining | None:
        """The stage this term runs before distillation, or None."""
        return None

    def sgd_parameters(self) -> list[nn.Parameter]:
        """Parameters of this term that train by plain SGD whatever the optimizer (a gradient whose scale is the
        method's knob, which Adam's normalisation would cancel)."""
        return []


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
    """The registered class for `name` (plugins load on a miss), or a DistilError suggesting the nearest names."""
    if name not in REGISTRY:
        plugins.load("methods")
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
        if err["type"] == "missing":
            info = cls.Params.model_fields.get(key)
            help_ = f" ({info.description})" if info is not None and info.description else ""
            raise DistilError(f"{field}.{key}: '{cls.name}' needs this parameter{help_}; add it to the loss term.") \
                from None
        raise DistilError(f"{field}.{key}: {err['msg']}.") from None
