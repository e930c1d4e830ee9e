"""`distil run --seeds N` on a tabular recipe: the distilled and the alone student again on seeds `seed + 1 ..`,
the teachers trained once, and the paired verdict (distil.verdict) on the headline metric (AUC for binary tasks)
and on log-loss, added to results.json and the report.

Both students of one seed start from the same initialisation and see the rows in the same order; the split is the
same for every seed (`data.split_seed`), so the Δ measures distillation, not the luck of the split."""

from __future__ import annotations

from distil.errors import DistilError
from distil.verdict import Verdict, paired_verdict

LOWER_IS_BETTER = {"logloss", "rmse", "mae", "ece"}
NAMES = {"auc": "AUC", "logloss": "log-loss", "gauc": "gAUC", "accuracy": "accuracy", "rmse": "RMSE", "mae": "MAE"}


def verdict_metrics(task: str) -> list[str]:
    """The metrics the verdict is given on: the headline one first."""
    return {"binary": ["auc", "logloss", "gauc"], "multiclass": ["accuracy", "logloss"],
            "regression": ["rmse", "mae"]}[task]


def check_seeds(recipe) -> None:
    """Seeds need a student alone to pair with (said before anything trains)."""
    if recipe.eval.seeds > 1 and not recipe.distill.baseline:
        raise DistilError(f"eval.seeds: {recipe.eval.seeds} seeds need a student alone to pair with the distilled "
                          "one; set distill.baseline: true or eval.seeds: 1.")


def paired_seed_rows(run, first: dict) -> list[dict]:
    """Per seed, the test metrics of both students: `first` is the first seed's evaluated models; the others are
    trained here (model files `student_seed<S>.pt` / `alone_seed<S>.pt`, reused on --resume)."""
    recipe, cfg = run.recipe, run.cfg
    keys = verdict_metrics(run.task)
    rows = [{"seed": recipe.seed, **{f"student_{k}": first["student"][k] for k in keys},
             **{f"alone_{k}": first["alone"][k] for k in keys}}]
    for offset in range(1, recipe.eval.seeds):
        seed = recipe.seed + offset
        row: dict = {"seed": seed}
        for role, terms, source in (("student", run.student_terms(), run.source), ("alone", run.alone_terms(), None)):
            model = run.train(f"{role}_seed{seed}", cfg.student, terms, teacher=False, source=source,
                              epochs=recipe.distill.epochs, seed=seed)
            metrics = run.metrics(model, run.splits.test, run.splits.test_groups)
            row.update({f"{role}_{k}": metrics[k] for k in keys})
        rows.append(row)
    return rows


def seeds_verdict(rows: list[dict], task: str) -> dict:
    """The verdict record: per metric, Δ = distilled − alone over the seeds with its 95% interval and word; `test`
    is the headline metric's (the record distil.verdict renders)."""
    keys = verdict_metrics(task)
    out: dict = {"seeds": [r["seed"] for r in rows], "per_seed": rows, "teacher_shared": True, "metric": keys[0],
                 "metrics": {}}
    for key in keys:
        verdict = paired_verdict([r[f"student_{key}"] for r in rows], [r[f"alone_{key}"] for r in rows],
                                 higher_is_better=key not in LOWER_IS_BETTER)
        out["metrics"][key] = verdict.to_dict()
    out["test"] = out["metrics"][keys[0]]
    return out


def verdict_lines(record: dict | None) -> list[str]:
    """Lines of the verdict for the terminal and report.md (AUC and log-loss in points of 0.01)."""
    if not record:
        return []
    lines = []
    for key, verdict in record["metrics"].items():
        v = Verdict.from_dict(verdict)
        head = f"**Verdict: {v.word}.** " if key == record["metric"] else ""
        lines.append(f"- {head}{v.line(NAMES.get(key, key), 100.0, ' points')}")
    seeds = ", ".join(str(s) for s in record["seeds"])
    key = record["metric"]
    per_seed = "; ".join(f"seed {r['seed']}: {r[f'student_{key}']:.4f} vs {r[f'alone_{key}']:.4f}"
                         for r in record["per_seed"])
    lines.append(f"- paired seeds {seeds} (same split, initialisation and row order per seed; the teachers were "
                 f"trained once): distilled vs alone test {NAMES.get(key, key)} {per_seed}")
    return lines
