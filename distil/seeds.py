"""`eval.seeds` / `distil run --seeds N`: the distilled and the alone student again on paired seeds, the teacher
trained once, and the verdict over the seeds (distil.verdict) added to the run's results and report.

Seed k (k = 1 .. N-1) is a sub-run `<run>/seeds/seed_<seed + k>/` of the same recipe with `seed + k`: both students
of one seed start from the same initialisation and see the data in the same order; the teacher is the first run's
(its model file, given as `teacher.checkpoint`) wherever the strategy reads `teacher`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from distil.errors import DistilError
from distil.recipe import Recipe
from distil.runlog import MetricsLog
from distil.verdict import paired_verdict

log = logging.getLogger("distil")
SEEDS_DIR = "seeds"
SHARED_TEACHER = {"offline", "transfer_set"}  # strategies whose teacher is recipe.teacher (run.teach())
RunOne = Callable[[Recipe, Path, bool], tuple[Path, dict]]  # (recipe, runs_dir, resume) -> (run_dir, results)


def seed_recipe(recipe: Recipe, offset: int, teacher_file: Path | None) -> Recipe:
    """The recipe of paired seed `recipe.seed + offset`: the same students, no post-stages, the shared teacher."""
    seed = recipe.seed + offset
    update: dict = {"name": f"seed_{seed}", "seed": seed, "finetune": None, "compress": None, "export": None,
                    "explain": None, "eval": recipe.eval.model_copy(update={"seeds": 1}),
                    "track": type(recipe.track)()}
    if teacher_file is not None and recipe.distill.strategy in SHARED_TEACHER and not recipe.teacher.checkpoint:
        update["teacher"] = recipe.teacher.model_copy(update={"checkpoint": str(teacher_file)})
    return recipe.model_copy(update=update)


def epoch_scores(records: list[dict], stage: str) -> tuple[float, float] | None:
    """(best, last) validation accuracy of `stage`'s epochs in a metrics log; None without validation records."""
    accs = [r["val_acc"] for r in records if r.get("stage") == stage and "val_acc" in r and "epoch" in r]
    return (max(accs), accs[-1]) if accs else None


def seed_scores(run_dir: Path, results: dict, seed: int) -> dict | None:
    """One seed's paired scores: test top-1 of both students and their best / last validation accuracy."""
    models = results.get("models", {})
    if "student" not in models or "alone" not in models:
        return None
    row = {"seed": seed, "student": models["student"]["top1"], "alone": models["alone"]["top1"]}
    records = MetricsLog(Path(run_dir) / "metrics.jsonl").records()
    distilled, alone = epoch_scores(records, "distill"), epoch_scores(records, "alone")
    if distilled is not None and alone is not None:
        row.update(student_best=distilled[0], student_last=distilled[1], alone_best=alone[0], alone_last=alone[1])
    return row


def run_paired_seeds(recipe: Recipe, run_dir: Path, results: dict, run_one: RunOne, resume: bool = False) -> dict:
    """Run seeds 1 .. eval.seeds-1 next to the finished first run and return the verdict record for its results."""
    rows = [seed_scores(run_dir, results, recipe.seed)]
    if rows[0] is None:
        raise_no_pair(recipe)
    teacher_file = run_dir / "models" / "teacher.pt"
    shared = teacher_file if teacher_file.is_file() else None
    if shared is not None and recipe.distill.strategy in SHARED_TEACHER:
        log.warning("distil: seeds 2..%d reuse the teacher of the first seed (%s); it was trained once",
                    recipe.eval.seeds, teacher_file)
    folder = run_dir / SEEDS_DIR
    for offset in range(1, recipe.eval.seeds):
        sub = seed_recipe(recipe, offset, shared)
        sub_dir, sub_results = run_one(sub, folder, resume and (folder / sub.name).is_dir())
        rows.append(seed_scores(sub_dir, sub_results, sub.seed))
    record = verdict_record(rows, shared is not None and recipe.distill.strategy in SHARED_TEACHER)
    MetricsLog(run_dir / "metrics.jsonl").write({"stage": "verdict", **record})
    return record


def raise_no_pair(recipe: Recipe) -> None:
    """A recipe with seeds but no student alone has nothing to pair."""
    raise DistilError(f"eval.seeds: {recipe.eval.seeds} seeds need a student alone to pair with the distilled one; "
                      "set distill.baseline: true or eval.seeds: 1.")


def verdict_record(rows: list[dict], teacher_shared: bool) -> dict:
    """The verdicts over paired seeds: test top-1 and, when every seed has them, best and last validation epoch."""
    out = {"seeds": [r["seed"] for r in rows], "per_seed": rows, "teacher_shared": teacher_shared,
           "test": paired_verdict([r["student"] for r in rows], [r["alone"] for r in rows]).to_dict()}
    if all("student_best" in r for r in rows):
        for when in ("best", "last"):
            out[f"val_{when}"] = paired_verdict([r[f"student_{when}"] for r in rows],
                                                [r[f"alone_{when}"] for r in rows]).to_dict()
    return out
