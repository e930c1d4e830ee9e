"""A recipe's run, stage by stage (teach, distill, alone, compress, export, evaluate, report), in its run folder."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from distil import checkpoint, distributed
from distil.cache import CacheBuilder, TeacherCache, fingerprint, open_cache, read_layout
from distil.card import write_model_card
from distil.compress.stage import Ship
from distil.data import Splits, load_dataset
from distil.data.augment import view_of
from distil.data.splits import check_splits
from distil.engine import Fit, predict, seed_everything, targets_of
from distil.errors import DistilError
from distil.explain.stage import run_explain
from distil.methods import teacher_taps
from distil.metrics import classification_metrics
from distil.models import build_model
from distil.preflight import check_models
from distil.profile import profile_model
from distil.recipe import LossTerm, ModelConfig, Recipe, dump_recipe
from distil.report import gains, write_report
from distil.report_html import save_predictions
from distil.report_settings import chosen_settings
from distil.runlog import MetricsLog
from distil.seeds import run_paired_seeds
from distil.strategies.augment_distill import augmentation
from distil.strategies.dispatch import run_strategy
from distil.strategies.finetune import finetune
from distil.strategies.schedules import label_terms, scheduled_objective
from distil.strategies.trainer import Transform
from distil.teacher_store import STORE, TeacherStore, teacher_fingerprint
from distil.teachers import LiveTeacher, TeacherSource
from distil.trackers import open_trackers

log = logging.getLogger("distil")
PROGRESS = ("models", "checkpoints", "cache")  # what a run folder holds once something has been trained
ROLES = {"teacher": "teacher", "student": "student (distilled)", "alone": "student (alone)",
         "pruned": "student (pruned)", "finetuned": "student (distilled + fine-tuned)"}


@dataclass
class RunResult:
    """Where a run wrote its files and the evaluation of each model."""

    run_dir: Path
    results: dict


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


class Run:
    """The stages of one recipe in its run folder; each finished stage leaves a model file and is skipped on resume."""

    def __init__(self, recipe: Recipe, runs_dir: Path | str = "runs", *, resume: bool = False,
                 overwrite: bool = False, quiet: bool = False) -> None:
        self.recipe = recipe
        self.dir = Path(runs_dir) / recipe.name
        self.resume = resume
        self.quiet = quiet or not distributed.is_main()
        self.device = distributed.setup(recipe.device)  # joins the process group under torchrun
        self._prepare_folder(overwrite)
        trackers = open_trackers(recipe.track, self.dir, recipe.name, recipe.model_dump(mode="json")) \
            if distributed.is_main() else []
        self.log = MetricsLog(self.dir / "metrics.jsonl", trackers)
        self.splits = load_dataset(recipe.data, seed=recipe.seed)
        self.warnings = check_splits(self.splits)  # for the report; one class fails here
        self.teacher_reused: str | None = None  # the teacher store's file when the teacher was not trained again
        for warning in self.warnings:
            log.warning("distil: %s", warning)

    def _prepare_folder(self, overwrite: bool) -> None:
        saved = self.dir / "recipe.yaml"
        text = dump_recipe(self.recipe)
        if self.dir.exists() and any(self.dir.iterdir()):
            if overwrite and distributed.is_main():
                shutil.rmtree(self.dir)
            elif not self.resume:
                raise DistilError(f"run folder {self.dir} already exists; pass --resume to continue it, --overwrite "
                                  "to start again, or --set name=... for a new run.")
            elif saved.is_file() and saved.read_text(encoding="utf-8") != text:
                raise DistilError(f"--resume: the recipe differs from {saved}; resume with the same recipe and "
                                  "overrides, or start a new run with --set name=....")
        distributed.barrier()  # every rank has looked at the folder before rank 0 writes into it
        checkpoint.atomic_write_text(saved, text)

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

    def save_model(self, role: str, model: nn.Module, cfg: ModelConfig) -> None:
        """Save a finished model with what rebuilds it."""
        architecture = cfg.model_dump(include=set(ModelConfig.model_fields))
        checkpoint.save_model(self.model_path(role), model, config=architecture, input_shape=self.splits.input_shape,
                              num_classes=self.splits.num_classes, class_names=self.splits.class_names,
                              extra={"run": self.recipe.name, "role": role}, **self.inputs_metadata)

    @property
    def inputs_metadata(self) -> dict:
        """What a model file keeps about its inputs: the preprocessing of raw inputs and the recipe's data section."""
        return {"preprocess": self.splits.preprocess, "data": self.recipe.data.model_dump(mode="json")}

    def train_stage(self, stage: str, role: str, cfg: ModelConfig, terms: list[LossTerm], *,
                    teacher: TeacherSource | None = None, epochs: int | None = None,
                    lr: float | None = None, batch_transform: Transform | None = None) -> nn.Module:
        """Train (or, when its model file exists on resume, load) the model of `role` against `terms`."""
        done = self.model_path(role)
        if self.resume and done.is_file():
            return checkpoint.load_model(done, trust_code=self.trusted_code)[0].to(self.device)
        seed_everything(self.recipe.seed)  # same seed per stage: distilled and alone students start identical
        model = make_model(cfg, self.splits, role)
        fit = Fit(stage=stage, model=model, objective=scheduled_objective(terms), train=self.splits.train,
                  val=self.splits.val, cfg=self.recipe.train, device=self.device, seed=self.recipe.seed,
                  teacher=teacher, epochs=epochs, lr=lr, checkpoint_path=self.dir / "checkpoints" / f"{stage}.ckpt",
                  log=self.log, quiet=self.quiet, augment=self.recipe.data.augment, batch_transform=batch_transform)
        if not self.resume:
            self.log.drop_stage(stage)
        model = fit.run(resume=self.resume).model
        self.save_model(role, model, cfg)
        return model

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

    def distill(self, teacher: nn.Module) -> nn.Module:
        """The student, trained against the teacher's outputs (live, or from the cache) and the labels."""
        d = self.recipe.distill
        if self.resume and self.model_path("student").is_file():
            source = None  # finished: train_stage loads the student
        else:
            source = self.cache(teacher) if self.recipe.cache is not None else LiveTeacher(teacher)
        return self.train_stage("distill", "student", self.recipe.student, d.losses, teacher=source, epochs=d.epochs,
                                batch_transform=augmentation(d.augment))

    def alone(self) -> nn.Module:
        """The same student trained on the labels only: the baseline distillation must beat."""
        return self.train_stage("alone", "alone", self.recipe.student, label_terms(self.recipe.distill.losses),
                                epochs=self.recipe.distill.epochs)

    def evaluate(self, models: dict[str, nn.Module]) -> dict:
        """Metrics on the test split and the size / speed profile of each model."""
        e = self.recipe.eval
        test = self.splits.test
        target = targets_of(test)
        logits = {role: predict(m, test, self.device) for role, m in models.items()}
        teacher_logits = logits.get("teacher")
        save_predictions(self.dir / "predictions.npz", target, logits, self.splits.class_names)
        results = {}
        for role, model in models.items():
            metrics = classification_metrics(logits[role], target, self.splits.num_classes,
                                             teacher_logits=teacher_logits, ece_bins=e.ece_bins)
            if hasattr(self.splits, "profile"):  # text: timed on real tokenized test sentences
                metrics.update(self.splits.profile(model, self.device, e))
            else:
                metrics.update(profile_model(model, self.splits.input_shape, self.device,
                                             latency_batch=e.latency_batch, throughput_batch=e.throughput_batch,
                                             repeats=e.latency_repeats))
            results[role] = {"label": ROLES.get(role, role), **metrics}
            self.log.write({"stage": "evaluate", "model": role, **metrics})
        return {"name": self.recipe.name, "dataset": self.splits.name, "test_samples": len(test),
                "device": str(self.device), "models": results}

    def execute(self) -> RunResult:
        """Run every stage in order and write results.json and report.md."""
        check_models(self.recipe, self.splits, self.device)  # before the teacher trains
        outcome = run_strategy(self) if self.recipe.distill.strategy != "offline" else None  # distil/strategies
        if outcome is None:
            teacher = self.teach()
            models = {"teacher": teacher, "student": self.distill(teacher)}
            if self.recipe.distill.baseline:
                models["alone"] = self.alone()
        else:
            teacher, models = outcome.teacher, outcome.models
        if self.recipe.finetune is not None:
            models["finetuned"] = finetune(self, models["student"])
        ship = Ship(self, teacher, models["student"]) if self.recipe.compress or self.recipe.export else None
        if ship is not None:
            models.update(ship.compress())  # prune (+ recovery distillation) and quantize
        self.log.drop_stage("evaluate")
        results = self.evaluate(models) if distributed.is_main() else {}  # rank 0 measures; the others wait
        if self.recipe.explain is not None:  # every rank: the soft tree trains like any student
            results["explain"] = run_explain(self, teacher)
        if distributed.is_main():
            if ship is not None:
                ship.export()  # ONNX, checked against PyTorch; a mismatch fails the run
                ship.finish(results)
            if outcome is not None:
                outcome.annotate(results)  # the strategy's labels and tables (per generation, per task)
            results["gains"] = gains(results)
            results["settings"] = chosen_settings(self.log.records())
            if self.warnings:
                results["warnings"] = list(self.warnings)
            if self.teacher_reused:
                results["teacher_reused"] = self.teacher_reused
            write_report(self.dir, results)
            write_model_card(self.dir, self.recipe, results)
        self.log.close()
        return RunResult(self.dir, distributed.broadcast_object(results))


def run_recipe(recipe: Recipe, runs_dir: Path | str = "runs", *, resume: bool = False, overwrite: bool = False,
               quiet: bool = False) -> RunResult:
    """Run a whole recipe in `runs_dir/<name>/` and return where it wrote and what it measured.

    A new run that fails before it saved anything (a bad dataset, a model that cannot fit) leaves no folder behind,
    so fixing the recipe and running it again needs no --overwrite.
    """
    if recipe.lm is not None:  # causal language models: their own stages (text is an extra)
        from distil.text.lm_run import run_lm

        return run_lm(recipe, runs_dir, resume=resume, overwrite=overwrite, quiet=quiet)
    if recipe.tabular is not None:  # recommendation / tabular: its own stages over the same engine
        from distil.tabular.run import run_tabular

        return run_tabular(recipe, runs_dir, resume=resume, overwrite=overwrite, quiet=quiet)
    result = _run_once(recipe, runs_dir, resume=resume, overwrite=overwrite, quiet=quiet)
    if recipe.eval.seeds > 1:  # distil.seeds: the students again on paired seeds, then the verdict

        def run_one(sub: Recipe, folder: Path, again: bool) -> tuple[Path, dict]:
            done = _run_once(sub, folder, resume=again, overwrite=not again, quiet=quiet)
            return done.run_dir, done.results

        results = result.results
        results["verdict"] = run_paired_seeds(recipe, result.run_dir, results, run_one, resume=resume)
        if distributed.is_main():
            write_report(result.run_dir, results)
    return result


def _run_once(recipe: Recipe, runs_dir: Path | str, *, resume: bool, overwrite: bool, quiet: bool) -> RunResult:
    folder = Path(runs_dir) / recipe.name
    fresh = overwrite or not (folder.is_dir() and any(folder.iterdir()))
    try:
        return Run(recipe, runs_dir, resume=resume, overwrite=overwrite, quiet=quiet).execute()
    except BaseException:
        if fresh and distributed.is_main() and not any((folder / part).exists() for part in PROGRESS):
            shutil.rmtree(folder, ignore_errors=True)
        raise
