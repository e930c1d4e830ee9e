"""`distil run` with a `tabular:` section: teachers (with any teacher-only fields), their ensemble, the student
distilled from the best teacher or the ensemble, the same student alone, then metrics, latency, ONNX and a report."""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distil import checkpoint
from distil.engine import Fit, predict, resolve_device, seed_everything, targets_of
from distil.errors import DistilError
from distil.recipe import LossTerm, Recipe, dump_recipe
from distil.runlog import MetricsLog
from distil.strategies.schedules import label_terms, scheduled_objective
from distil.tabular import losses  # noqa: F401  (registers the tabular losses)
from distil.tabular.config import TabularModelConfig
from distil.tabular.data import TabularSplits, load_tabular
from distil.tabular.export import export_student
from distil.tabular.latency import latencies_ms
from distil.tabular.metrics import HEADLINE, task_metrics
from distil.tabular.models import Ensemble, build_tabular, tabular_model_spec
from distil.tabular.records import records_spec
from distil.tabular.report import label, render_tabular_text, write_tabular_report
from distil.tabular.seeds import check_seeds, paired_seed_rows, seeds_verdict
from distil.tabular.transparent import transparent_students
from distil.teachers import LiveTeacher

log = logging.getLogger("distil")


def label_loss(task: str) -> list[LossTerm]:
    """How a model learns from the labels alone: cross-entropy (log-loss for binary) or MSE for regression."""
    return [LossTerm(name="mse_label")] if task == "regression" else [LossTerm(name="ce")]


class TabularRun:
    """The stages of a tabular recipe in `runs/<name>/`; a finished model file is reused on --resume."""

    def __init__(self, recipe: Recipe, runs_dir: Path | str, *, resume: bool, overwrite: bool, quiet: bool) -> None:
        check_seeds(recipe)
        self.recipe, self.cfg = recipe, recipe.tabular
        self.dir = Path(runs_dir) / recipe.name
        self.resume, self.quiet = resume, quiet
        saved = self.dir / "recipe.yaml"
        text = dump_recipe(recipe)
        if self.dir.exists() and any(self.dir.iterdir()):
            if overwrite:
                shutil.rmtree(self.dir)
            elif not resume:
                raise DistilError(f"run folder {self.dir} already exists; pass --resume to continue it, --overwrite "
                                  "to start again, or --set name=... for a new run.")
            elif saved.is_file() and saved.read_text(encoding="utf-8") != text:
                raise DistilError(f"--resume: the recipe differs from {saved}; resume with the same recipe.")
        self.device = resolve_device(recipe.device)
        self.splits: TabularSplits = load_tabular(self.cfg, recipe.data)
        checkpoint.atomic_write_text(saved, text)
        checkpoint.atomic_write_text(self.dir / "encoders.json", self.splits.encoders.to_json())
        self.log = MetricsLog(self.dir / "metrics.jsonl")

    @property
    def task(self) -> str:
        """binary, multiclass or regression."""
        return self.splits.encoders.task

    def build(self, cfg: TabularModelConfig, teacher: bool) -> nn.Module:
        """A fresh model over every field (teacher) or the serving-time fields only (student)."""
        enc = self.splits.encoders
        fields = enc.fields if teacher else enc.student_fields()
        return build_tabular(cfg, fields, self.task, self.splits.num_classes)

    def model_path(self, role: str) -> Path:
        """Where the finished model of `role` is saved."""
        return self.dir / "models" / f"{role}.pt"

    def train(self, role: str, cfg: TabularModelConfig, terms: list[LossTerm], *, teacher: bool,
              source: nn.Module | None = None, epochs: int | None = None, seed: int | None = None) -> nn.Module:
        """Train (or on resume load) the model of `role` against `terms`, the teacher `source` when given, from
        `seed` (default: the recipe's)."""
        seed = self.recipe.seed if seed is None else seed
        seed_everything(seed)  # the distilled and the alone student start from the same weights
        model = self.build(cfg, teacher)
        done = self.model_path(role)
        if self.resume and done.is_file():
            _, state = checkpoint.read_model_file(done)
            model.load_state_dict(state)
            return model.to(self.device).eval()
        val = self.splits.val if self.task != "regression" and len(self.splits.val) else None
        fit = Fit(stage=role, model=model, objective=scheduled_objective(terms), train=self.splits.train, val=val,
                  cfg=self.recipe.train, device=self.device, seed=seed,
                  teacher=LiveTeacher(source) if source is not None else None, epochs=epochs,
                  checkpoint_path=self.dir / "checkpoints" / f"{role}.ckpt", log=self.log, quiet=self.quiet)
        if not self.resume:
            self.log.drop_stage(role)
        model = fit.run(resume=self.resume).model
        self.save(role, model, cfg, teacher)
        return model

    def student_terms(self) -> list[LossTerm]:
        """The distilled student's objective: the recipe's distill.losses."""
        return list(self.recipe.distill.losses)

    def alone_terms(self) -> list[LossTerm]:
        """The student alone's objective: the label terms of distill.losses (or the task's label loss)."""
        return label_terms(self.student_terms()) if self.task != "regression" else label_loss(self.task)

    def save(self, role: str, model: nn.Module, cfg: TabularModelConfig, teacher: bool) -> None:
        """A model file with its architecture and the encoders its inputs need (preprocessing travels with it)."""
        checkpoint.save_model(self.model_path(role), model, **self.file_metadata(role, cfg, teacher))

    def file_metadata(self, role: str, cfg: TabularModelConfig, teacher: bool) -> dict:
        """What a model file (and the student's ONNX export) of `role` records: the architecture over its fields,
        the "records" preprocessing (encoders, a raw example) and the table it was trained on (for distil eval)."""
        enc = self.splits.encoders
        fields = enc.fields if teacher else enc.student_fields()
        example = {f.name: self.splits.example[f.name] for f in fields}
        config = {"name": f"tabular:{cfg.name}", "tabular": tabular_model_spec(cfg, fields, self.task)}
        table = {"tabular": self.cfg.model_dump(mode="json"), "data": self.recipe.data.model_dump(mode="json")}
        return {"config": config, "input_shape": (enc.width(teacher),), "num_classes": self.splits.num_classes,
                "class_names": enc.class_names, "extra": {"run": self.recipe.name, "role": role},
                "preprocess": records_spec(enc, example, teacher), "table": table}

    def headline(self, model: nn.Module) -> float:
        """The model's validation score (AUC, accuracy, or minus RMSE), higher is better."""
        metric, higher = HEADLINE[self.task]
        part = self.splits.val if len(self.splits.val) else self.splits.train
        score = self.metrics(model, part, groups=None)[metric]
        return score if higher else -score

    def metrics(self, model: nn.Module, part, groups: np.ndarray | None) -> dict:
        """The task's metrics of `model` on a split."""
        enc = self.splits.encoders
        logits = predict(model, part, self.device).numpy()
        return task_metrics(self.task, logits, targets_of(part).numpy(), groups, enc.target_mean, enc.target_std)

    def execute(self) -> dict:
        """Every stage, then results.json and report.md."""
        t_epochs = self.cfg.teacher_epochs
        teachers = {f"teacher_{c.name}": self.train(f"teacher_{c.name}", c, label_loss(self.task), teacher=True,
                                                    epochs=t_epochs) for c in self.cfg.teachers}
        if len(teachers) < len(self.cfg.teachers):
            raise DistilError("tabular.teachers: a model is listed twice; list each architecture once.")
        scores = {role: self.headline(m) for role, m in teachers.items()}
        best = max(scores, key=scores.get)
        models: dict[str, nn.Module] = dict(teachers)
        if len(teachers) > 1:
            models["ensemble"] = Ensemble(list(teachers.values())).to(self.device).eval()
        source_role = "ensemble" if self.cfg.distill_from == "ensemble" and len(teachers) > 1 else best
        self.source = models[source_role]
        models["student"] = self.train("student", self.cfg.student, self.student_terms(), teacher=False,
                                       source=self.source, epochs=self.recipe.distill.epochs)
        if self.recipe.distill.baseline:
            models["alone"] = self.train("alone", self.cfg.student, self.alone_terms(), teacher=False,
                                         epochs=self.recipe.distill.epochs)
        results = self.evaluate(models, source_role, scores)
        if self.recipe.eval.seeds > 1:
            rows = paired_seed_rows(self, results["models"])
            results["verdict"] = seeds_verdict(rows, self.task)
            self.log.write({"stage": "verdict", **results["verdict"]})
        if self.cfg.transparent:
            results["transparent"] = transparent_students(self.splits, self.source, self.cfg.transparent,
                                                          self.device, self.recipe.seed)
        if self.cfg.export:
            meta = checkpoint.model_metadata(**self.file_metadata("student", self.cfg.student, teacher=False))
            results["export"] = export_student(models["student"], self.splits, self.dir / "models" / "student.onnx",
                                               meta)
        checkpoint.atomic_write_text(self.dir / "results.json", json.dumps(results, indent=2))
        write_tabular_report(self.dir, results)
        return results

    def evaluate(self, models: dict[str, nn.Module], source_role: str, scores: dict[str, float]) -> dict:
        """Test metrics, parameters and latency (batch 1 and 512 by default) of every model."""
        test, enc = self.splits.test, self.splits.encoders
        out = {}
        for role, model in models.items():
            row = self.metrics(model, test, self.splits.test_groups)
            row["params"] = sum(p.numel() for p in model.parameters())
            row["fields"] = "all" if role.startswith("teacher") or role == "ensemble" else "serving-time"
            row["label"] = label(role)
            out[role] = row
        for batch in self.cfg.latency_batches:
            for role, ms in latencies_ms(models, test.x, batch, self.device).items():
                out[role][f"latency_b{batch}_ms"] = ms
        for role, row in out.items():
            self.log.write({"stage": "evaluate", "model": role, **row})
        train_y = self.splits.train.y
        return {"name": self.recipe.name, "dataset": self.splits.name, "task": self.task, "split": self.splits.split,
                "rows": {"train": len(self.splits.train), "val": len(self.splits.val), "test": len(test)},
                "positive_rate": self.splits.positive_rate,
                "train_positive_rate": float(train_y.float().mean()) if self.task == "binary" else None,
                "teacher_only": [f.name for f in enc.fields if f.teacher_only], "distilled_from": source_role,
                "val_scores": scores, "losses": [t.model_dump(mode="json") for t in self.recipe.distill.losses],
                "models": out}


@dataclass
class TabularResult:
    """Where a tabular run wrote, what it measured, and its table as text for the terminal."""

    run_dir: Path
    results: dict
    text: str


def run_tabular(recipe: Recipe, runs_dir: Path | str = "runs", *, resume: bool = False, overwrite: bool = False,
                quiet: bool = False) -> TabularResult:
    """Run a recipe with a `tabular:` section in `runs_dir/<name>/` (on `tabular.threads` torch threads)."""
    previous = torch.get_num_threads()
    if recipe.tabular.threads:
        torch.set_num_threads(recipe.tabular.threads)
    try:
        run = TabularRun(recipe, runs_dir, resume=resume, overwrite=overwrite, quiet=quiet)
        results = run.execute()
    finally:
        torch.set_num_threads(previous)
    return TabularResult(run.dir, results, render_tabular_text(results))
