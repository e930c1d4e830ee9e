"""The recipe: one validated description of a run (data, teacher, student, distillation, training, evaluation)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from distil.errors import DistilError


class StrictModel(BaseModel):
    """A config section: unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticConfig(StrictModel):
    """A seeded, generated classification problem of any size, class count and shape."""

    num_samples: int = Field(1000, ge=10)
    num_classes: int = Field(4, ge=2)
    shape: list[int] = Field(default_factory=lambda: [16], min_length=1, max_length=3)
    noise: float = Field(1.0, ge=0)


class AugmentConfig(StrictModel):
    """Training-time augmentation, replayable per (sample, view) so a teacher cache stays exact."""

    crop_padding: int = Field(0, ge=0, description="random shift of up to this many pixels (zero padding)")
    flip: bool = Field(False, description="random horizontal flip")
    noise: float = Field(0.0, ge=0, description="std of additive noise")
    views: int = Field(1, ge=1, description="distinct augmented views per sample; epoch e uses view e mod views")

    @property
    def active(self) -> bool:
        """Whether any augmentation is configured."""
        return bool(self.crop_padding or self.flip or self.noise)


class DataConfig(StrictModel):
    """Where the samples come from and how they are split into train / val / test."""

    name: str = "digits"
    path: str | None = None
    label_column: str = "label"
    val_fraction: float = Field(0.1, ge=0.0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0.0, lt=0.5)
    split_seed: int = 0
    normalize: bool = True
    limit: int | None = Field(None, ge=10)
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)


class ModelConfig(StrictModel):
    """A model: a zoo name (mlp, cnn, resnet8, ...), `python:pkg.mod:factory` or `checkpoint:path`."""

    name: str = "mlp"
    hidden: list[int] | None = None
    channels: list[int] | None = None
    dropout: float = Field(0.0, ge=0.0, lt=1.0)


class TeacherConfig(ModelConfig):
    """The teacher: trained by the `teach` stage unless `checkpoint` points to a saved one."""

    checkpoint: str | None = None
    epochs: int | None = Field(None, ge=1)
    lr: float | None = Field(None, gt=0)


class LossTerm(BaseModel):
    """One weighted term of the distillation objective; its extra keys are the method's parameters."""

    model_config = ConfigDict(extra="allow")

    name: str
    weight: float = 1.0

    @property
    def params(self) -> dict[str, Any]:
        """The method-specific parameters (everything but name and weight)."""
        return dict(self.model_extra or {})


def _default_losses() -> list[LossTerm]:
    return [LossTerm(name="ce", weight=0.1), LossTerm(name="kd", weight=0.9, temperature=4.0)]


class DistillConfig(StrictModel):
    """How the student learns from the teacher: the weighted loss terms and the baseline to compare with."""

    strategy: Literal["offline"] = "offline"
    losses: list[LossTerm] = Field(default_factory=_default_losses, min_length=1)
    baseline: bool = True
    epochs: int | None = Field(None, ge=1)


class EarlyStopping(StrictModel):
    """Stop when the validation metric has not improved for `patience` epochs."""

    metric: Literal["val_acc", "val_loss"] = "val_acc"
    patience: int | None = Field(None, ge=1)


class TrainConfig(StrictModel):
    """The optimisation loop shared by every stage."""

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    scheduler: Literal["cosine", "step", "none"] = "cosine"
    warmup_epochs: int = Field(0, ge=0)
    milestones: list[int] = Field(default_factory=list)
    gamma: float = Field(0.1, gt=0, le=1)
    grad_clip: float | None = Field(None, gt=0)
    accumulate: int = Field(1, ge=1)
    precision: Literal["fp32", "bf16"] = "fp32"
    early_stopping: EarlyStopping = Field(default_factory=EarlyStopping)
    num_workers: int = Field(0, ge=0)
    log_every: int = Field(50, ge=1)
    compile: bool = Field(False, description="torch.compile the student (opt-in)")


class CacheConfig(StrictModel):
    """The teacher-output cache: the teacher runs once over the training data, the student reads from disk."""

    dtype: Literal["fp16", "fp32"] = "fp16"
    topk: int | None = Field(None, ge=1, description="keep only the top-k log-probabilities and the rest's mass")
    batch_size: int = Field(512, ge=1)
    path: str | None = Field(None, description="cache folder (default: <run>/cache)")
    verify: bool = Field(True, description="check every block's checksum when the cache is opened")


class EvalConfig(StrictModel):
    """What the evaluation measures beyond accuracy: calibration bins and the latency / throughput probes."""

    ece_bins: int = Field(15, ge=2)
    latency_batch: int = Field(1, ge=1)
    throughput_batch: int = Field(256, ge=1)
    latency_repeats: int = Field(50, ge=3)


class Recipe(StrictModel):
    """A whole run: data, teacher, student, distillation, training and evaluation settings."""

    name: str = "run"
    seed: int = 0
    device: str = "auto"
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=lambda: TeacherConfig(name="mlp", hidden=[512, 512]))
    student: ModelConfig = Field(default_factory=lambda: ModelConfig(name="mlp", hidden=[32]))
    distill: DistillConfig = Field(default_factory=DistillConfig)
    cache: CacheConfig | None = None
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)

    @model_validator(mode="after")
    def _name_is_a_folder_name(self) -> Recipe:
        if not self.name or any(c in self.name for c in "/\\") or self.name in {".", ".."}:
            raise ValueError("name must be a plain folder name (no slashes)")
        return self


DEFAULT_RECIPE = "digits.yaml"


def builtin_recipe_path(name: str = DEFAULT_RECIPE) -> Path:
    """Path of a recipe shipped inside the package (distil/recipes/)."""
    return Path(str(resources.files("distil") / "recipes" / name))


def _field_path(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "recipe"


def validate_recipe(raw: Any, source: str = "recipe") -> Recipe:
    """Turn a parsed YAML mapping into a Recipe, or raise DistilError naming the first bad field."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        kind = type(raw).__name__
        raise DistilError(f"{source}: the recipe must be a mapping of sections (data, teacher, ...), not a {kind}.")
    try:
        recipe = Recipe.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = _field_path(err["loc"])
        if err["type"] == "extra_forbidden":
            raise DistilError(f"{source}: unknown field '{field}'; remove it or check its spelling.") from None
        raise DistilError(f"{source}: field '{field}': {err['msg']}.") from None
    from distil.methods import validate_terms  # late import: the registry imports torch

    validate_terms(recipe.distill.losses, field="distill.losses")
    return recipe


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.1.c=value` into its key path and a YAML-typed value."""
    if "=" not in text:
        raise DistilError(f"--set {text!r}: expected KEY=VALUE, e.g. train.epochs=30.")
    key, value = text.split("=", 1)
    if not key.strip():
        raise DistilError(f"--set {text!r}: the key is empty; expected KEY=VALUE, e.g. train.epochs=30.")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except yaml.YAMLError:
        parsed = value
    return key.strip().split("."), parsed


def apply_override(raw: dict, keys: list[str], value: Any) -> None:
    """Set raw[k0][k1]... = value, creating mappings as needed; list items are addressed by number."""
    node: Any = raw
    path = ""
    for i, key in enumerate(keys):
        last = i == len(keys) - 1
        path = f"{path}.{key}" if path else key
        if isinstance(node, list):
            if not key.isdigit() or int(key) >= len(node):
                raise DistilError(f"--set {path}: '{key}' is not an index of a list of {len(node)} items.")
            if last:
                node[int(key)] = value
                return
            node = node[int(key)]
        elif isinstance(node, dict):
            if last:
                node[key] = value
                return
            if node.get(key) is None:
                node[key] = {}
            node = node[key]
        else:
            raise DistilError(f"--set {path}: cannot set a field inside a {type(node).__name__} value.")


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe file (the built-in default when None), apply `--set` overrides and validate it."""
    source = Path(path) if path is not None else builtin_recipe_path()
    if not source.is_file():
        raise DistilError(f"recipe file {source} does not exist; give the path of a .yaml recipe.")
    try:
        raw = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise DistilError(f"recipe file {source} is not valid YAML{where}; fix its syntax.") from None
    except UnicodeDecodeError:
        raise DistilError(f"recipe file {source} is not UTF-8 text; save it as UTF-8 YAML.") from None
    if raw is None:
        raw = {}
    if isinstance(raw, dict) and overrides:
        # Overrides apply to the full resolved recipe, so list items that come from defaults are addressable.
        resolved = validate_recipe(raw, str(source)).model_dump(mode="json")
        for text in overrides:
            apply_override(resolved, *parse_override(text))
        raw = resolved
    return validate_recipe(raw, str(source))


def dump_recipe(recipe: Recipe) -> str:
    """The resolved recipe as YAML, every default written out."""
    return yaml.safe_dump(recipe.model_dump(mode="json"), sort_keys=False)
