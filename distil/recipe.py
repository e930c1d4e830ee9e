"""The recipe: one validated description of a run (data, teacher, student, distillation, training, evaluation)."""

from __future__ import annotations

import types
import typing
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PositiveFloat,
    ValidationError,
    field_validator,
    model_serializer,
    model_validator,
)

from distil.errors import DistilError, nearest
from distil.explain.config import ExplainConfig
from distil.tabular.config import TabularConfig
from distil.text.config import LMConfig, TextDataConfig, TextModelConfig, share_teacher_tokenizer

SEED_LIMIT = 2**32  # seeds are numpy's (32 bits)
NAME_LIMIT = 100  # characters in a run name: a folder name, with room for the files under it


class StrictModel(BaseModel):
    """A config section: unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SyntheticConfig(StrictModel):
    """A seeded, generated classification problem of any size, class count and shape."""

    num_samples: int = Field(1000, ge=10)
    num_classes: int = Field(4, ge=2)
    shape: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [16], min_length=1, max_length=3)
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


class UnlabeledConfig(StrictModel):
    """The transfer_set strategy's unlabeled pool: a share of the training split (labels hidden) or another dataset."""

    fraction: float | None = Field(None, gt=0, lt=1, description="hold out this share of the training split")
    name: str | None = Field(None, description="or: a dataset (same names as data.name) whose inputs form the pool")
    path: str | None = None
    limit: int | None = Field(None, ge=10)


class DataConfig(StrictModel):
    """Where the samples come from and how they are split into train / val / test."""

    name: str = "digits"
    path: str | None = None
    label_column: str = "label"
    val_fraction: float = Field(0.1, ge=0.0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0.0, lt=0.5)
    split_seed: int = Field(0, ge=0, lt=SEED_LIMIT)
    normalize: bool = True
    limit: int | None = Field(None, ge=10)
    synthetic: SyntheticConfig = Field(default_factory=SyntheticConfig)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    text: TextDataConfig = Field(default_factory=TextDataConfig)
    unlabeled: UnlabeledConfig | None = None


class ModelConfig(StrictModel):
    """A model: a zoo name (mlp, cnn, resnet8, ...), `python:pkg.mod:factory` or `checkpoint:path`."""

    name: str = "mlp"
    hidden: list[int] | None = None
    channels: list[int] | None = None
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    text: TextModelConfig | None = None
    tabular: dict | None = Field(None, description="written by distil into tabular model files (architecture and "
                                 "field layout); recipes name tabular models in the tabular: section")


class TeacherConfig(ModelConfig):
    """The teacher: trained by the `teach` stage unless `checkpoint` points to a saved one."""

    checkpoint: str | None = None
    epochs: int | None = Field(None, ge=1)
    lr: PositiveFloat | Literal["auto"] | None = Field(None, description="default: train.lr")


class Schedule(StrictModel):
    """A value that follows the stage's progress p (0 → 1): constant, linear, cosine, step or warm-up."""

    kind: Literal["constant", "linear", "cosine", "step", "warmup"] = "linear"
    start: float = Field(description="the value at p = 0")
    end: float | None = Field(None, description="the value at p = 1 (linear, cosine; warmup: after the warm-up)")
    milestones: list[float] = Field(default_factory=list, description="step: fractions of the stage where the "
                                    "value is multiplied by gamma")
    gamma: float = Field(0.1, gt=0)
    warmup: float = Field(0.1, gt=0, le=1, description="warmup: the share of the stage spent going from start to end")

    @model_validator(mode="after")
    def _end_when_needed(self) -> Schedule:
        if self.end is None and self.kind in {"linear", "cosine", "warmup"}:
            raise ValueError(f"a {self.kind} schedule needs an end value")
        return self


class LossTerm(BaseModel):
    """One weighted term of the distillation objective; its extra keys are the method's parameters."""

    model_config = ConfigDict(extra="allow")

    name: str
    weight: float | Literal["auto"] | None = Field(
        None, description="the term's weight; auto: set before training so the term's gradient on the student is "
        "`ratio` times the label loss's (default: auto for feature and relation terms, else 1)")
    ratio: float | None = Field(None, gt=0, description="weight: auto: the term's initial gradient norm as a "
                                "multiple of the label loss's (default 1)")
    schedule: dict[str, Schedule] | None = Field(None, description="weight or a float parameter (e.g. temperature) "
                                                 "following a schedule through the stage")
    sample_weight: Literal["confidence", "correctness"] | None = Field(
        None, description="weight this teacher term per sample by the teacher's confidence or correctness")

    @property
    def params(self) -> dict[str, Any]:
        """The method-specific parameters (everything but name, weight, ratio, schedule and sample_weight)."""
        return dict(self.model_extra or {})

    @model_serializer(mode="wrap")
    def _drop_unset_options(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items()
                if v is not None or k not in {"schedule", "sample_weight", "ratio"}}


def default_losses() -> list[LossTerm]:
    """The objective when a recipe or an API call names none: 0.5·CE + 0.5·KD at T = 4 (KD scaled by T²)."""
    return [LossTerm(name="ce", weight=0.5), LossTerm(name="kd", weight=0.5, temperature=4.0)]


class MemberConfig(TeacherConfig):
    """A multi_teacher teacher: trained on the labels (of `classes` only, when given) or loaded from `checkpoint`."""

    weight: float = Field(1.0, gt=0, description="its weight in the ensemble")
    classes: list[int] | None = Field(None, min_length=2, description="the dataset classes its outputs predict, "
                                      "in output order (default: all)")


class DistillAugmentConfig(StrictModel):
    """Extra distill-stage inputs labelled by the teacher: mixup / cutmix of training pairs, or adversarial samples."""

    kind: Literal["mixup", "cutmix", "fgsm", "pgd"]
    alpha: float = Field(1.0, gt=0, description="mixup / cutmix: the mixing share is drawn from Beta(alpha, alpha)")
    eps: float = Field(0.1, gt=0, description="fgsm / pgd: the L-inf radius, in (standardized) input units")
    steps: int = Field(5, ge=1, description="pgd: attack steps")
    keep_clean: bool = Field(True, description="train on the clean batch too (else on the new inputs only)")


class DistillConfig(StrictModel):
    """How the student learns from the teacher: the weighted loss terms and the baseline to compare with."""

    strategy: Literal["offline", "multi_teacher", "online", "self", "transfer_set", "continual"] = "offline"
    losses: list[LossTerm] = Field(default_factory=default_losses, min_length=1)
    baseline: bool = True
    epochs: int | None = Field(None, ge=1)
    augment: DistillAugmentConfig | None = None
    # strategy-specific settings (distil.strategies checks each is used only by its strategy)
    teachers: list[MemberConfig] = Field(default_factory=list, description="multi_teacher: the teachers")
    combine: Literal["mean", "weights", "confidence", "best"] = Field("mean", description="multi_teacher")
    features_from: int = Field(0, ge=0, description="multi_teacher: the teacher whose features the student sees")
    peers: int = Field(1, ge=1, description="online: copies of the student trained alongside it")
    online_teacher: bool = Field(False, description="online: the teacher architecture trains jointly too")
    generations: int = Field(3, ge=1, description="self: student generations after the labels-only one")
    ensemble: bool = Field(False, description="self: also evaluate the mean of the generations")
    tasks: int | list[list[int]] | None = Field(None, description="continual: N equal class splits, or the classes")
    scenario: Literal["task", "class"] = Field("task", description="continual: evaluate within a task or over all")
    labeled: bool = Field(True, description="transfer_set: also learn from the labeled part")
    threshold: float | None = Field(None, gt=0, lt=1, description="transfer_set: skip pool samples the teacher is "
                                    "less confident about")


class EarlyStopping(StrictModel):
    """Stop when the validation metric has not improved for `patience` epochs."""

    metric: Literal["val_acc", "val_loss"] = "val_acc"
    patience: int | None = Field(None, ge=1)


class TrainConfig(StrictModel):
    """The optimisation loop shared by every stage."""

    epochs: int = Field(20, ge=1)
    batch_size: int = Field(64, ge=1)
    optimizer: Literal["sgd", "adamw"] = "adamw"
    lr: PositiveFloat | Literal["auto"] = Field("auto", description="auto: chosen by a learning-rate range test on "
                                        "the student with the stage's objective before each stage trains")
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
    max_bad_steps: int = Field(0, ge=0, description="optimizer steps with a NaN/inf loss or gradient to skip "
                               "before stopping (0: stop at the first; >0 uses fused optimizers that skip on device)")


class CacheConfig(StrictModel):
    """The teacher-output cache: the teacher runs once over the training data, the student reads from disk."""

    dtype: Literal["fp16", "fp32"] = "fp16"
    topk: int | None = Field(None, ge=1, description="keep only the top-k log-probabilities and the rest's mass")
    batch_size: int = Field(512, ge=1)
    path: str | None = Field(None, description="cache folder (default: <run>/cache)")
    verify: bool = Field(True, description="check every block's checksum when the cache is opened")


class TrackConfig(StrictModel):
    """Opt-in experiment trackers; metrics.jsonl is always written."""

    tensorboard: bool = Field(False, description="TensorBoard event files in <run>/tensorboard/")
    mlflow: bool = Field(False, description="an MLflow run in the local store <run>/mlflow.db")
    wandb: bool = Field(False, description="a Weights & Biases run in <run>/wandb/, offline unless WANDB_MODE=online "
                        "(upload later with `wandb sync`)")


class EvalConfig(StrictModel):
    """What the evaluation measures beyond accuracy: calibration bins and the latency / throughput probes."""

    ece_bins: int = Field(15, ge=2)
    latency_batch: int = Field(1, ge=1)
    throughput_batch: int = Field(256, ge=1)
    latency_repeats: int = Field(50, ge=3)
    seeds: int = Field(1, ge=1, le=100, description="paired seeds of the distilled and the alone student (the teacher "
                       "trained once): Δ = distilled − alone as mean ± 95% interval and a verdict")


class PruneConfig(StrictModel):
    """Prune the distilled student, then recover with a short distillation from the unpruned student."""

    method: Literal["structured", "unstructured"] = "structured"
    amount: float = Field(0.5, gt=0, lt=1, description="fraction of channels per prunable layer (structured) or of "
                          "all Linear/Conv weights by global magnitude (unstructured) removed")
    recovery_epochs: int = Field(10, ge=0, description="epochs of recovery distillation (0 = none)")
    recovery_lr: float | None = Field(None, gt=0, description="learning rate of the recovery (default: train.lr)")
    losses: list[LossTerm] = Field(default_factory=default_losses, min_length=1)


class QuantizeConfig(StrictModel):
    """Post-training int8 quantization: dynamic (Linear/LSTM) or static with calibration (FX graph mode)."""

    mode: Literal["auto", "dynamic", "static"] = Field("auto", description="auto: static for conv nets, else dynamic")
    backend: Literal["x86", "fbgemm", "qnnpack", "onednn"] = "x86"
    calibration_samples: int = Field(512, ge=1, description="training samples the static observers see")


class CompressConfig(StrictModel):
    """Compression of the distilled student, in order: prune (+ recovery), then quantize."""

    prune: PruneConfig | None = None
    quantize: QuantizeConfig | None = None


class ExportConfig(StrictModel):
    """ONNX export of the shipped fp32 student, checked against PyTorch with ONNX Runtime on the test split."""

    format: Literal["onnx"] = "onnx"
    opset: int = Field(18, ge=18, description="ONNX opset version")
    atol: float = Field(1e-4, ge=0, description="allowed |onnx - torch| per logit: atol + rtol * |torch|")
    rtol: float = Field(1e-3, ge=0)
    max_top1_change: float = Field(0.001, ge=0, le=1, description="largest allowed fraction of test samples whose "
                                   "top-1 class differs between ONNX Runtime and PyTorch")


class ServeConfig(StrictModel):
    """Defaults of `distil serve` for this run's models (command-line options override them)."""

    host: str = Field("127.0.0.1", min_length=1, description="a loopback address; binding beyond loopback needs "
                      "--host on the command line (a recipe's other value is ignored with a warning)")
    port: int = Field(8000, ge=1, le=65535)
    max_batch: int = Field(256, ge=1, description="most inputs one POST /predict may carry, and one forward pass")
    max_body_bytes: int = Field(4_000_000, ge=1024, description="largest request body accepted, in bytes")
    max_wait_ms: float = Field(2.0, ge=0, le=1000, description="micro-batching: how long the first waiting "
                               "request waits for others to share its forward pass (0: no micro-batching)")
    queue: int = Field(256, ge=1, description="most requests waiting for inference; more get 503 with Retry-After")
    body_timeout_s: float = Field(10.0, gt=0, le=3600, description="a request body must arrive within this time "
                                  "(else 408 and the connection is closed)")
    keep_alive_s: float = Field(5.0, gt=0, le=3600, description="an idle connection is closed after this time")


class FinetuneConfig(StrictModel):
    """A last stage after distillation: the student trains on the labels only, with a small LR, for a few epochs."""

    epochs: int = Field(3, ge=1)
    lr: float = Field(1e-4, gt=0)


class Recipe(StrictModel):
    """A whole run: data, teacher, student, distillation, training and evaluation settings."""

    name: str = "run"
    seed: int = Field(0, ge=0, lt=SEED_LIMIT)
    device: str = "auto"
    data: DataConfig = Field(default_factory=DataConfig)
    teacher: TeacherConfig = Field(default_factory=lambda: TeacherConfig(name="mlp", hidden=[512, 512]))
    student: ModelConfig = Field(default_factory=lambda: ModelConfig(name="mlp", hidden=[32]))
    distill: DistillConfig = Field(default_factory=DistillConfig)
    finetune: FinetuneConfig | None = None
    cache: CacheConfig | None = None
    train: TrainConfig = Field(default_factory=TrainConfig)
    eval: EvalConfig = Field(default_factory=EvalConfig)
    track: TrackConfig = Field(default_factory=TrackConfig)
    explain: ExplainConfig | None = None
    compress: CompressConfig | None = None
    export: ExportConfig | None = None
    serve: ServeConfig = Field(default_factory=ServeConfig)
    lm: LMConfig | None = Field(None, description="causal language-model distillation (distil.text.lm_run)")
    tabular: TabularConfig | None = Field(None, description="recommendation / tabular distillation (distil.tabular)")

    @field_validator("name")
    @classmethod
    def _name_is_a_folder_name(cls, name: str) -> str:
        if not name or any(c in name for c in "/\\") or name in {".", ".."}:
            raise ValueError("name must be a plain folder name (no slashes)")
        if not name.isprintable():
            raise ValueError("name must be a plain folder name (no control characters such as NUL or newlines)")
        if len(name) > NAME_LIMIT:
            raise ValueError(f"name is {len(name)} characters long; use at most {NAME_LIMIT} (it names the run folder)")
        return name

    @model_validator(mode="after")
    def _text_tokenizers(self) -> Recipe:
        share_teacher_tokenizer(self)  # text: data and student default to the hf: teacher's tokenizer folder
        return self


DEFAULT_RECIPE = "digits.yaml"


def builtin_recipe_path(name: str = DEFAULT_RECIPE) -> Path:
    """Path of a recipe shipped inside the package (distil/recipes/)."""
    return Path(str(resources.files("distil") / "recipes" / name))


def _field_path(loc: tuple) -> str:
    return ".".join(str(p) if str(p).isprintable() else repr(str(p)) for p in loc) or "recipe"  # one line


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The config section class an annotation holds (through Optional, lists and dicts), if any."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType, list, dict, Annotated):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def section_fields(loc: tuple) -> list[str]:
    """The valid field names of the recipe section at `loc` (list indices skipped), or [] when it is not one."""
    model: type[BaseModel] | None = Recipe
    for key in loc:
        if isinstance(key, int) or model is None:
            continue
        field = model.model_fields.get(str(key))
        model = _model_in(field.annotation) if field is not None else None
    return list(model.model_fields) if model is not None else []


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
            valid = section_fields(err["loc"][:-1])
            hint = nearest(str(err["loc"][-1]), valid)
            listed = f"; valid fields here: {', '.join(valid)}" if valid else ""
            raise DistilError(f"{source}: unknown field '{field}'{hint}{listed}.") from None
        raise DistilError(f"{source}: field '{field}': {err['msg']}.") from None
    for check in _CHECKS:
        check(recipe)
    return recipe


_CHECKS: list[Callable[[Recipe], None]] = []


def add_check(check: Callable[[Recipe], None]) -> Callable[[Recipe], None]:
    """Register a check every validated recipe passes through (raising DistilError on a bad field).

    The schema knows no loss or strategy: the layers above check their own names and combinations (the loss
    registry, the strategies) by registering here when they are imported, which `import distil` does.
    """
    if check not in _CHECKS:
        _CHECKS.append(check)
    return check


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.1.c=value` into its key path and a YAML-typed value."""
    if "=" not in text:
        raise DistilError(f"--set {text!r}: expected KEY=VALUE, e.g. train.epochs=30.")
    key, value = text.split("=", 1)
    if not key.strip():
        raise DistilError(f"--set {text!r}: the key is empty; expected KEY=VALUE, e.g. train.epochs=30.")
    try:
        parsed = yaml.safe_load(value) if value.strip() else ""
    except (yaml.YAMLError, ValueError, RecursionError):  # e.g. 2001-02-30 or deep nesting: keep the text
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


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, typing.Hashable) and key in seen:
                raise DuplicateKey(key, key_node.start_mark.line + 1)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


class DuplicateKey(yaml.YAMLError):
    """A mapping that names a key twice."""

    def __init__(self, key: object, line: int) -> None:
        super().__init__(f"duplicate key {key!r} at line {line}")
        self.key, self.line = key, line


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None) -> Recipe:
    """Read a recipe file (the built-in default when None), apply `--set` overrides and validate it."""
    source = Path(path) if path is not None else builtin_recipe_path()
    if not source.is_file():
        raise DistilError(f"recipe file {source} does not exist; give the path of a .yaml recipe.")
    try:
        raw = yaml.load(source.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader
    except DuplicateKey as exc:
        raise DistilError(f"recipe file {source}: key '{exc.key}' appears twice (again at line {exc.line}); keep "
                          "one of them.") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise DistilError(f"recipe file {source} is not valid YAML{where}; fix its syntax.") from None
    except UnicodeDecodeError:
        raise DistilError(f"recipe file {source} is not UTF-8 text; save it as UTF-8 YAML.") from None
    except (ValueError, RecursionError) as exc:  # PyYAML raises these for impossible dates and deep nesting
        raise DistilError(f"recipe file {source} holds a value YAML cannot read ({str(exc)[:60]}); quote it or "
                          "fix it.") from None
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
