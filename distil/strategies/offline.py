"""Offline distillation: a frozen teacher, trained first (or loaded), teaches a student, live or from the teacher
cache; the same student trained alone is the baseline. `run_offline` is the recipe strategy, `distill` the Python
API for any teacher, student and dataset of (x, y)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from torch import nn
from torch.utils.data import Dataset

from distil.batch import Batch
from distil.calibrate import Balance, RangeTest
from distil.context import RunContext, score
from distil.data import as_indexed
from distil.distributed import resolve_device
from distil.engine import Fit, seed_everything
from distil.methods import Method, Objective
from distil.methods.objective import default_methods
from distil.recipe import TrainConfig
from distil.strategies.augment_distill import augmentation
from distil.strategies.multi_teacher import EnsembleTeacher
from distil.strategies.tables import Outcome
from distil.teachers import LiveTeacher, TeacherSource


@dataclass
class DistillResult:
    """The trained student, its metrics on the evaluation split (with agreement to the teacher) and its history;
    the lr it trained with (`lr_find`: the range test's curve when it was `auto`) and the weights `weight: auto`
    terms were given (`balance`)."""

    student: nn.Module
    metrics: dict[str, float]
    teacher_metrics: dict[str, float]
    history: list[dict] = field(default_factory=list)
    lr: float | None = None
    lr_find: RangeTest | None = None
    balance: Balance | None = None


def distill(teacher: nn.Module | Sequence[nn.Module] | TeacherSource, student: nn.Module, train: Dataset,
            val: Dataset | None = None, test: Dataset | None = None, losses: Sequence[Method] | None = None, *,
            epochs: int = 40, batch_size: int = 64, lr: float | str = "auto", optimizer: str = "adamw",
            device: str = "auto", seed: int = 0, train_config: TrainConfig | None = None, quiet: bool = True,
            batch_transform: Callable[[Batch, nn.Module], Batch] | None = None) -> DistillResult:
    """Train `student` to reproduce the frozen `teacher` on `train`; metrics come from `test`, else `val`.

    `teacher` may also be a list of models (their mean-probability ensemble) or a TeacherSource with a `model`
    (e.g. `EnsembleTeacher`). `losses` defaults to 0.5·CE + 0.5·KD(T=4); terms may be scheduled or weighted per
    sample (distil.strategies.schedules / terms). `lr="auto"` picks the learning rate by a range test on the student
    with this objective before training (distil.calibrate). `batch_transform` adds mixup, cutmix or adversarial inputs
    (distil.strategies.augment_distill). `train_config` gives every loop setting; otherwise the keyword
    arguments build one.
    """
    cfg = train_config or TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer=optimizer)
    objective = Objective(list(losses) if losses else default_methods())
    run_device = resolve_device(device)
    seed_everything(seed)
    train, val = as_indexed(train), as_indexed(val) if val is not None else None
    source = _source(teacher)
    teacher = source.model.to(run_device)
    fit = Fit(stage="distill", model=student, objective=objective, train=train, val=val, cfg=cfg,
              device=run_device, seed=seed, teacher=source, quiet=quiet, batch_transform=batch_transform)
    result = fit.run()
    held_out = as_indexed(test) if test is not None else val if val is not None else train
    return DistillResult(
        student=result.model,
        metrics=score(result.model, held_out, run_device, teacher=teacher),
        teacher_metrics=score(teacher, held_out, run_device),
        history=result.history,
        lr=result.lr,
        lr_find=result.lr_find,
        balance=result.balance,
    )


def run_offline(run: RunContext) -> Outcome:
    """The offline stages of a recipe run: teach, cache (when the recipe has a cache section), distill, alone."""
    teacher = run.teach()
    d = run.recipe.distill
    if run.resume and run.model_path("student").is_file():
        source = None  # finished: train_stage loads the student
    else:
        source = run.cache(teacher) if run.recipe.cache is not None else LiveTeacher(teacher)
    student = run.train_stage("distill", "student", run.recipe.student, d.losses, teacher=source, epochs=d.epochs,
                              batch_transform=augmentation(d.augment))
    models = {"teacher": teacher, "student": student}
    if d.baseline:
        models["alone"] = run.alone()
    return Outcome("offline", teacher, models, report=False)


def _source(teacher: nn.Module | Sequence[nn.Module] | TeacherSource) -> TeacherSource:
    """The teacher as a source with a `model` to evaluate: a live model, a mean ensemble, or the given source."""
    if isinstance(teacher, nn.Module):
        return LiveTeacher(teacher)
    if hasattr(teacher, "outputs"):
        return teacher
    return EnsembleTeacher.of(list(teacher))
