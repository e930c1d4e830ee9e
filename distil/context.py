"""Floor 2, under the strategies: what training a model means in a run, written once.

`RunContext` is a recipe's run folder and what every strategy needs from it: the data, the device, the metrics log,
model building with its fit check (`make_model`), each finished model saved as models/<role>.pt with its metadata
and, on resume, loaded instead of trained again (`finished`). `Trainer` trains one model with the one engine
(`Fit`), inside a run (checkpoints, resume, logging) or outside one (the Python API). `score` is the one
predict-then-score helper."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from distil import checkpoint, distributed
from distil.batch import Batch
from distil.cache import CacheBuilder, TeacherCache, fingerprint, open_cache, read_layout
from distil.data import Splits, as_indexed, load_dataset
from distil.data.augment import view_of
from distil.data.splits import check_splits
from distil.distributed import resolve_device
from distil.engine import Fit, predict, seed_everything, targets_of
from distil.errors import DistilError
from distil.methods import Objective, teacher_taps
from distil.metrics import classification_metrics
from distil.models import build_model
from distil.recipe import AugmentConfig, LossTerm, ModelConfig, Recipe, TrainConfig
from distil.run_folder import prepare_run_folder
from distil.runlog import MetricsLog
from distil.strategies.schedules import label_terms, scheduled_objective
from distil.teacher_store import STORE, TeacherStore, teacher_fingerprint
from distil.teachers import LiveTeacher, TeacherSource
from distil.trackers import open_trackers

log = logging.getLogger("distil")
Transform = Callable[[Batch, nn.Module], Batch]


def make_model(cfg: ModelConfig, splits: Splits, role: str, checkpoint_path: str | None = None,
               trust_code: Collection[str] = ()) -> nn.Module:
    """Build a zoo / python: model, or load a `checkpoint:` one (rebuilt with the `python:` factories in
    `trust_code` only), and check it fits the data."""
    path = checkpoint_path or (cfg.name.removeprefix("checkpoint:") if cfg.name.startswith("checkpoint:") else None)
    if path is not None:
        model, meta = checkpoint.load_model(Path(path), trust_code=trust_code)
        if meta["num_classes"] != splits.num_classes:
            raise DistilError(f"{role} checkpoint {path} predicts {meta['num_classes']} classes but the data "
                              f"'{splits.name}' has {splits.num_classes}; use a checkpoint trained on this data.")
    else:
        model = build_model(cfg, splits.input_shape, splits.num_classes)
    check_model_fits(model, splits, role)
    return model


def check_model_fits(model: nn.Module, splits: Splits, role: str) -> None:
    """Run two samples through the model: wrong input shapes or class counts fail here, before training."""
    x = splits.train.x[:2] if len(splits.train) else torch.zeros(2, *splits.input_shape)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(x)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:160]
        raise DistilError(f"{role} model does not accept inputs shaped {tuple(splits.input_shape)} from data "
                          f"'{splits.name}' ({first}); choose a model for this input shape.") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != splits.num_classes:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DistilError(f"{role} model outputs {shape} but the data '{splits.name}' has {splits.num_classes} "
                          f"classes; give the model {splits.num_classes} outputs.")


class RunContext:
    """The run folder of one recipe and what its strategies train with; each finished model is saved under models/
    and, on resume, loaded instead of trained again."""

    def __init__(self, recipe: Recipe, runs_dir: Path | str = "runs", *, resume: bool = False,
                 overwrite: bool = False, quiet: bool = False) -> None:
        self.recipe = recipe
        self.dir = Path(runs_dir) / recipe.name
        self.resume = resume
        self.quiet = quiet or not distributed.is_main()
        self.device = distributed.setup(recipe.device)  # joins the process group under torchrun
        prepare_run_folder(self.dir, self.recipe, resume=self.resume, overwrite=overwrite)
        trackers = open_trackers(recipe.track, self.dir, recipe.name, recipe.model_dump(mode="json")) \
            if distributed.is_main() else []
        self.log = MetricsLog(self.dir / "metrics.jsonl", trackers)
        self.splits = load_dataset(recipe.data, seed=recipe.seed)
        self.warnings = check_splits(self.splits)  # for the report; one class fails here
        self.teacher_reused: str | None = None  # the teacher store's file when the teacher was not trained again
        for warning in self.warnings:
            log.warning("distil: %s", warning)

    @property
    def trusted_code(self) -> frozenset[str]:
        """The `python:` factories the recipe names: the run's own model files may be rebuilt with them."""
        found: set[str] = set()

        def walk(value: object) -> None:
            if isinstance(value, dict):
                name = value.get("name")
                if isinstance(name, str) and name.startswith("python:"):
                    found.add(name)
                for item in value.values():
                    walk(item)
            elif isinstance(value, list):
                for item in value:
                    walk(item)

        walk(self.recipe.model_dump(mode="json"))
        return frozenset(found)

    def model_path(self, role: str) -> Path:
        """Where the finished model of `role` (teacher, student, alone) is saved."""
        return self.dir / "models" / f"{role}.pt"

    def save_model(self, role: str, model: nn.Module, cfg: ModelConfig, classes: list[int] | None = None) -> None:
        """Save a finished model as models/<role>.pt with what rebuilds it, predicting `classes` (default: all)."""
        architecture = cfg.model_dump(include=set(ModelConfig.model_fields))
        names, extra = self.splits.class_names, {"run": self.recipe.name, "role": role}
        if classes is not None:
            names, extra = [names[c] for c in classes], {**extra, "classes": list(classes)}
        checkpoint.save_model(self.model_path(role), model, config=architecture, input_shape=self.splits.input_shape,
                              num_classes=len(names), class_names=names, extra=extra, **self.inputs_metadata)

    @property
    def inputs_metadata(self) -> dict:
        """What a model file keeps about its inputs: the preprocessing of raw inputs and the recipe's data section."""
        return {"preprocess": self.splits.preprocess, "data": self.recipe.data.model_dump(mode="json")}

    def finished(self, role: str) -> nn.Module | None:
        """On resume, the saved model of `role` (on the run's device); None when it is still to be trained."""
        path = self.model_path(role)
        if not self.resume or not path.is_file():
            return None
        return checkpoint.load_model(path, trust_code=self.trusted_code)[0].to(self.device)

    @property
    def trainer(self) -> Trainer:
        """The trainer of this run: its train section, device, seed, validation split and run folder."""
        return Trainer(self.recipe.train, self.device, self.recipe.seed, self.splits.val, self.quiet,
                       self.recipe.data.augment, self)

    def train_stage(self, stage: str, role: str, cfg: ModelConfig, terms: list[LossTerm], *,
                    teacher: TeacherSource | None = None, epochs: int | None = None,
                    lr: float | None = None, batch_transform: Transform | None = None) -> nn.Module:
        """Train (or, when its model file exists on resume, load) a fresh `cfg` model of `role` against `terms`;
        every stage starts from the same seed, so the distilled and the alone students start identical."""
        return self.trainer.fit(stage, lambda: make_model(cfg, self.splits, role), scheduled_objective(terms),
                                self.splits.train, teacher=teacher, epochs=epochs, lr=lr,
                                batch_transform=batch_transform, role=role, arch=cfg)


    def teach(self) -> nn.Module:
        """The teacher: loaded from `teacher.checkpoint`, or trained on the labels."""
        t = self.recipe.teacher
        if t.checkpoint:
            model = make_model(t, self.splits, "teacher", checkpoint_path=t.checkpoint,
                               trust_code=self.trusted_code)
            return model.to(self.device).eval()
        store, key = TeacherStore(self.dir.parent / STORE), teacher_fingerprint(self.recipe, self.splits.train)
        done = self.model_path("teacher")
        kept = None if self.resume and done.is_file() else store.get(key)
        if kept is not None:  # the same teacher, data, loop settings and seed: trained before
            if distributed.is_main():
                checkpoint.atomic_write_bytes(done, kept.read_bytes())
            distributed.barrier()
            log.warning("distil: teacher reused from %s (same fingerprint: teacher, data, train settings, seed); "
                        "not trained again", kept)
            self.log.write({"stage": "teach", "reused": str(kept)})
            self.teacher_reused = str(kept)
            return checkpoint.load_model(done, trust_code=self.trusted_code)[0].to(self.device).eval()
        model = self.train_stage("teach", "teacher", t, [LossTerm(name="ce")], epochs=t.epochs, lr=t.lr)
        if distributed.is_main():
            store.put(key, done)
        return model

    def cache(self, teacher: nn.Module) -> TeacherCache:
        """Run the teacher once over every training sample (and augmented view) into the on-disk cache."""
        c, aug = self.recipe.cache, self.recipe.data.augment
        folder = Path(c.path) if c.path else self.dir / "cache"
        views = aug.views if aug.active else 1
        settings = {"data": self.recipe.data.model_dump(mode="json"), "seed": self.recipe.seed, "views": views,
                    "dtype": c.dtype, "topk": c.topk}
        taps = teacher_taps(self.recipe.distill.losses)  # teacher features the losses read are cached too
        if taps:
            settings["taps"] = taps
        expected = fingerprint(teacher, self.splits.train, settings)
        if c.path and (layout := read_layout(folder)) is not None and layout.fingerprint != expected:
            return open_cache(folder, expected)  # a cache given by path is never overwritten: this refuses it
        source = LiveTeacher(teacher, taps=taps)
        CacheBuilder(folder, source, self.splits.train, c, views=views, fingerprint=expected, device=self.device,
                     transform=lambda b: view_of(b, b.view, aug, self.recipe.seed), quiet=self.quiet).build()
        return open_cache(folder, expected, verify=False)  # the build just checked every block

    def alone(self) -> nn.Module:
        """The same student trained on the labels only: the baseline distillation must beat."""
        return self.train_stage("alone", "alone", self.recipe.student, label_terms(self.recipe.distill.losses),
                                epochs=self.recipe.distill.epochs)


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
    run: RunContext | None = None
    histories: dict[str, list[dict]] = field(default_factory=dict)

    @classmethod
    def for_run(cls, run: RunContext) -> Trainer:
        """The trainer of a recipe run (`run.trainer`)."""
        return run.trainer

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
        return self.run.finished(role) if self.run is not None and role is not None else None

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
            run.save_model(role, model, arch, classes)
        return model


def score(model: nn.Module, dataset: Dataset, device: torch.device,
          teacher: nn.Module | None = None) -> dict[str, float]:
    """Classification metrics of `model` on `dataset` (with its agreement with `teacher` when one is given)."""
    target = targets_of(dataset)
    logits = predict(model, dataset, device)
    reference = predict(teacher, dataset, device) if teacher is not None else None
    return classification_metrics(logits, target, logits.shape[1], teacher_logits=reference)
