"""How a strategy trains one model with the engine, from Python or inside a recipe run (checkpoints, resume)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.data import Dataset

from distil import checkpoint
from distil.batch import Batch
from distil.data import as_indexed
from distil.engine import Fit, predict, resolve_device, seed_everything, targets_of
from distil.methods import Objective
from distil.metrics import classification_metrics
from distil.recipe import AugmentConfig, ModelConfig, TrainConfig
from distil.teachers import TeacherSource

if TYPE_CHECKING:
    from distil.pipeline import Run

Transform = Callable[[Batch, nn.Module], Batch]


@dataclass
class Trainer:
    """The loop settings, device, seed and validation data a strategy trains with; inside a recipe run also the run
    folder: each stage checkpoints and logs there, each finished model is saved as models/<role>.pt and, on resume,
    loaded instead of trained again. `histories` keeps each stage's per-epoch records."""

    cfg: TrainConfig
    device: torch.device
    seed: int = 0
    val: Dataset | None = None
    quiet: bool = True
    augment: AugmentConfig | None = None
    run: Run | None = None
    histories: dict[str, list[dict]] = field(default_factory=dict)

    @classmethod
    def for_run(cls, run: Run) -> Trainer:
        """The trainer of a recipe run: its train section, device, seed, validation split and run folder."""
        r = run.recipe
        return cls(r.train, run.device, r.seed, run.splits.val, run.quiet, r.data.augment, run)

    @classmethod
    def standalone(cls, cfg: TrainConfig | None = None, device: str = "auto", seed: int = 0,
                   val: Dataset | None = None, quiet: bool = True) -> Trainer:
        """A trainer outside any run (the Python API): nothing is written to disk."""
        return cls(cfg or TrainConfig(), resolve_device(device), seed, as_indexed(val) if val is not None else None,
                   quiet)

    def with_val(self, val: Dataset | None) -> Trainer:
        """The same trainer validating on `val`."""
        return dataclasses.replace(self, val=val)

    def finished(self, role: str | None) -> nn.Module | None:
        """On resume, the saved model of `role`; None when it is still to be trained."""
        run = self.run
        if run is None or role is None or not run.resume or not run.model_path(role).is_file():
            return None
        return checkpoint.load_model(run.model_path(role), trust_code=run.trusted_code)[0].to(self.device)

    def fit(self, stage: str, build: Callable[[], nn.Module], objective: Objective, train: Dataset, *,
            teacher: TeacherSource | None = None, epochs: int | None = None, lr: float | None = None,
            batch_transform: Transform | None = None, role: str | None = None, arch: ModelConfig | None = None,
            classes: list[int] | None = None) -> nn.Module:
        """Train the model `build()` makes (seeded first) against `objective` on `train` and return it.

        In a run, `role` and `arch` save it as models/<role>.pt (predicting `classes`, default all) and a
        finished one is loaded instead.
        """
        done = self.finished(role)
        if done is not None:
            return done
        seed_everything(self.seed)
        model = build()
        run = self.run
        fit = Fit(stage=stage, model=model, objective=objective, train=train, val=self.val, cfg=self.cfg,
                  device=self.device, seed=self.seed, teacher=teacher, epochs=epochs, lr=lr,
                  checkpoint_path=run.dir / "checkpoints" / f"{stage}.ckpt" if run else None,
                  log=run.log if run else None, quiet=self.quiet, augment=self.augment,
                  batch_transform=batch_transform)
        if run is not None and not run.resume:
            run.log.drop_stage(stage)
        result = fit.run(resume=run is not None and run.resume)
        self.histories[stage] = result.history
        model = result.model
        if run is not None and role is not None and arch is not None:
            self.save(role, model, arch, classes)
        return model

    def save(self, role: str, model: nn.Module, arch: ModelConfig, classes: list[int] | None = None) -> None:
        """Save a finished model of the run as models/<role>.pt, predicting `classes` (default: every class)."""
        run = self.run
        if classes is None:
            run.save_model(role, model, arch)
            return
        config = arch.model_dump(include=set(ModelConfig.model_fields))
        checkpoint.save_model(run.model_path(role), model, config=config, input_shape=run.splits.input_shape,
                              num_classes=len(classes), class_names=[run.splits.class_names[c] for c in classes],
                              extra={"run": run.recipe.name, "role": role, "classes": list(classes)},
                              **run.inputs_metadata)


def score(model: nn.Module, dataset: Dataset, device: torch.device,
          teacher: nn.Module | None = None) -> dict[str, float]:
    """Classification metrics of `model` on `dataset` (with its agreement with `teacher` when one is given)."""
    target = targets_of(dataset)
    logits = predict(model, dataset, device)
    reference = predict(teacher, dataset, device) if teacher is not None else None
    return classification_metrics(logits, target, logits.shape[1], teacher_logits=reference)
