"""Floor 3: a recipe's run. Picks the strategy (which trains: teach, cache, distill, alone, ...), runs the post-stages
(finetune, compress, explain), evaluates every model and writes the report, in the run folder."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from distil import distributed, guards
from distil.card import write_model_card
from distil.compress.stage import Ship
from distil.context import RunContext, check_model_fits, make_model
from distil.engine import predict, targets_of
from distil.explain.stage import run_explain
from distil.metrics import classification_metrics
from distil.preflight import check_models
from distil.profile import profile_models
from distil.recipe import Recipe
from distil.report import gains, write_report
from distil.report_html import save_predictions
from distil.report_settings import chosen_settings
from distil.seeds import run_paired_seeds
from distil.strategies.dispatch import run_strategy
from distil.strategies.finetune import finetune

__all__ = ["PROGRESS", "ROLES", "Run", "RunResult", "check_model_fits", "make_model", "run_recipe"]
PROGRESS = ("models", "checkpoints", "cache")  # what a run folder holds once something has been trained
ROLES = {"teacher": "teacher", "student": "student (distilled)", "alone": "student (alone)",
         "pruned": "student (pruned)", "finetuned": "student (distilled + fine-tuned)"}


@dataclass
class RunResult:
    """Where a run wrote its files and the evaluation of each model."""

    run_dir: Path
    results: dict


class Run(RunContext):
    """A recipe's run: its strategy trains (distil.strategies, offline included), then the post-stages (finetune,
    compress, explain), the evaluation of every model and the report."""

    def evaluate(self, models: dict[str, nn.Module]) -> dict:
        """Metrics on the test split and the size / speed profile of each model."""
        e = self.recipe.eval
        test = self.splits.test
        target = targets_of(test)
        logits = {role: predict(m, test, self.device) for role, m in models.items()}
        self.predicted = {role: out.argmax(-1) for role, out in logits.items()}  # for distil.guards
        teacher_logits = logits.get("teacher")
        save_predictions(self.dir / "predictions.npz", target, logits, self.splits.class_names)
        text = hasattr(self.splits, "profile")  # text: each model timed on real tokenized test sentences
        profiles = {} if text else profile_models(models, self.splits.input_shape, self.device,
                                                  latency_batch=e.latency_batch,
                                                  throughput_batch=e.throughput_batch, repeats=e.latency_repeats)
        results = {}
        for role, model in models.items():
            metrics = classification_metrics(logits[role], target, self.splits.num_classes,
                                             teacher_logits=teacher_logits, ece_bins=e.ece_bins)
            metrics.update(self.splits.profile(model, self.device, e) if text else profiles[role])
            results[role] = {"label": ROLES.get(role, role), **metrics}
            self.log.write({"stage": "evaluate", "model": role, **metrics})
        latency_batch = 1 if hasattr(self.splits, "profile") else e.latency_batch  # text: one sentence at a time
        return {"name": self.recipe.name, "dataset": self.splits.name, "test_samples": len(test),
                "device": str(self.device), "latency_batch": latency_batch, "throughput_batch": e.throughput_batch,
                "models": results}

    def execute(self) -> RunResult:
        """Run every stage in order and write results.json and report.md."""
        check_models(self.recipe, self.splits, self.device)  # before the teacher trains
        guards.speak(self, guards.before_training(self))
        outcome = run_strategy(self)  # distil/strategies: the only code that trains
        teacher, models = outcome.teacher, outcome.models
        if self.recipe.finetune is not None:
            models["finetuned"] = finetune(self, models["student"])
        ship = Ship(self, teacher, models["student"]) if self.recipe.compress or self.recipe.export else None
        if ship is not None:
            models.update(ship.compress())  # prune (+ recovery distillation) and quantize
        self.log.drop_stage("evaluate")
        self.log.drop_stage("guards")
        if distributed.is_main():  # rank 0 measures; the others wait
            guards.speak(self, guards.statistics_check(self, models))
            results = self.evaluate(models)
            guards.speak(self, guards.after_evaluation(self, models, results, self.predicted))
        else:
            results = {}
        if self.recipe.explain is not None:  # every rank: the soft tree trains like any student
            results["explain"] = run_explain(self, teacher)
        if distributed.is_main():
            if ship is not None:
                ship.export()  # ONNX, checked against PyTorch; a mismatch fails the run
                ship.finish(results)
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
