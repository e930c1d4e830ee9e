"""MovieLens-100K click-through ("rating >= 4"), recipe distil/recipes/movielens.yaml: each teacher (with the
privileged, teacher-only fields), their ensemble, the small student alone, distilled from the best teacher and from
the ensemble, and the privileged-feature pair (the same student distilled from the best architecture trained with
and without the teacher-only fields): AUC, log-loss, gAUC, ECE, parameters, latency; students on paired seeds with
Δ and its 95% interval (distil.verdict). Teachers are trained once (seed 0).

Run: nice -n 10 .venv/bin/python benchmarks/tabular.py [--seeds 3]   (writes benchmarks/results/recommendation.md)
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

from distil.checkpoint import atomic_write_text
from distil.recipe import load_recipe
from distil.tabular.latency import latencies_ms
from distil.tabular.models import Ensemble
from distil.tabular.report import label
from distil.tabular.run import TabularRun, label_loss
from distil.verdict import paired_verdict

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "distil" / "recipes" / "movielens.yaml"
OUT = ROOT / "benchmarks" / "results" / "recommendation.md"
METRICS = [("auc", "AUC", True), ("logloss", "log-loss", False), ("gauc", "gAUC", True), ("ece", "ECE", False)]
PAIRS = [("student_best", "alone", "distilled from the best teacher vs alone"),
         ("student_ensemble", "alone", "distilled from the ensemble vs alone"),
         ("student_privileged", "student_plain", "privileged pair: from the teacher with teacher-only fields vs "
                                                 "from the same architecture without them"),
         ("student_plain", "alone", "distilled from the teacher without teacher-only fields vs alone")]


def open_run(privileged: bool, runs: Path) -> TabularRun:
    """The recipe's run (resumable: finished model files are reused), with or without the teacher-only fields."""
    recipe = load_recipe(RECIPE, [f"tabular.privileged={str(privileged).lower()}", "tabular.export=false",
                                  f"name=bench-{'privileged' if privileged else 'plain'}"])
    return TabularRun(recipe, runs, resume=True, overwrite=False, quiet=True)


def main() -> None:
    """Train everything (resuming what a previous call finished), then write the results page."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-tabular")
    args = parser.parse_args()
    torch.set_num_threads(1)
    start = time.time()
    priv, plain = open_run(True, args.runs), open_run(False, args.runs)
    cfg, task = priv.cfg, priv.task
    epochs = cfg.teacher_epochs
    teachers = {f"teacher_{c.name}": priv.train(f"teacher_{c.name}", c, label_loss(task), teacher=True, epochs=epochs)
                for c in cfg.teachers}
    scores = {role: priv.headline(m) for role, m in teachers.items()}
    best = max(scores, key=scores.get)
    best_cfg = next(c for c in cfg.teachers if f"teacher_{c.name}" == best)
    ensemble = Ensemble(list(teachers.values())).eval()
    plain_teacher = plain.train(best, best_cfg, label_loss(task), teacher=True, epochs=epochs)
    test, groups = priv.splits.test, priv.splits.test_groups
    assert torch.equal(plain.splits.test.x[:, :plain.splits.encoders.width(False)],
                       test.x[:, :priv.splits.encoders.width(False)]), "the two runs' students must see the same rows"
    fixed = {**teachers, "ensemble": ensemble, f"{best}_plain": plain_teacher}
    rows = {role: priv.metrics(m, test, groups) if role != f"{best}_plain" else plain.metrics(m, plain.splits.test,
                                                                                               groups)
            for role, m in fixed.items()}
    students: dict[str, list[dict]] = {k: [] for k in ("alone", "student_best", "student_ensemble",
                                                       "student_privileged", "student_plain")}
    last: dict[str, torch.nn.Module] = {}
    distill_epochs = priv.recipe.distill.epochs
    for seed in range(priv.recipe.seed, priv.recipe.seed + args.seeds):
        trained = {
            "alone": priv.train(f"alone_s{seed}", cfg.student, priv.alone_terms(), teacher=False,
                                epochs=distill_epochs, seed=seed),
            "student_best": priv.train(f"student_best_s{seed}", cfg.student, priv.student_terms(), teacher=False,
                                       source=teachers[best], epochs=distill_epochs, seed=seed),
            "student_ensemble": priv.train(f"student_ensemble_s{seed}", cfg.student, priv.student_terms(),
                                           teacher=False, source=ensemble, epochs=distill_epochs, seed=seed),
            "student_plain": plain.train(f"student_s{seed}", cfg.student, plain.student_terms(), teacher=False,
                                         source=plain_teacher, epochs=distill_epochs, seed=seed)}
        trained["student_privileged"] = trained["student_best"]
        for role, model in trained.items():
            students[role].append({"seed": seed, **priv.metrics(model, test, groups)})
        last = trained
        print(f"seed {seed} done at {time.time() - start:.0f}s", file=sys.stderr, flush=True)
    timed = {**fixed, "student": last["alone"]}
    latency = {b: latencies_ms(timed, test.x, b, priv.device) for b in (1, 512)}
    params = {role: sum(p.numel() for p in m.parameters()) for role, m in timed.items()}
    wall = time.time() - start
    atomic_write_text(OUT, render(priv, best, rows, students, latency, params, args.seeds, wall))
    print(OUT.read_text())


def mean_sd(values: list[float]) -> str:
    """mean ± sample standard deviation (4 decimals)."""
    if len(values) < 2:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def render(run: TabularRun, best: str, rows: dict, students: dict, latency: dict, params: dict, seeds: int,
           wall: float) -> str:
    """The results page."""
    r, split = run.splits, run.splits.split
    teacher_only = ", ".join(f.name for f in r.encoders.fields if f.teacher_only)
    head = "| model | fields | params | " + " | ".join(m[1] for m in METRICS) + " | latency b=1 | latency b=512 |"
    lines = ["# Recommendation: MovieLens-100K click-through distillation", "",
             f"Command: `nice -n 10 .venv/bin/python benchmarks/tabular.py --seeds {seeds}` on the shared 2-core CPU "
             f"machine (torch 1 thread), {wall / 60:.1f} minutes wall in all. Recipe `distil/recipes/movielens.yaml` "
             f"(teachers {', '.join(c.name for c in run.cfg.teachers)}; student {run.cfg.student.name} "
             f"embed_dim {run.cfg.student.embed_dim} hidden {run.cfg.student.hidden}; losses "
             + ", ".join(f"{t.name}×{t.weight}" for t in run.recipe.distill.losses) + ").", "",
             f"Data: MovieLens-100K from RecBole's wheel, label rating ≥ 4 (positive rate {r.positive_rate:.4f}), "
             f"{len(r.train):,} train / {len(r.val):,} val / {len(r.test):,} test rows, split {split} "
             f"(data.split_seed 0). Teacher-only (privileged) fields: {teacher_only}. Teachers are trained once "
             f"(seed 0); students on seeds 0..{seeds - 1}, each seed's students from the same initialisation and "
             f"row order. Test-split metrics; gAUC over users; latency = median forward pass (interleaved rounds).",
             "", head, "|" + "|".join(["---"] * 2 + ["---:"] * (len(METRICS) + 3)) + "|"]
    for role, row in rows.items():
        name = f"{label(best)} without teacher-only fields" if role.endswith("_plain") else label(role)
        fields = "serving-time" if role.endswith("_plain") else "all"
        lat = [f"{latency[b][role]:.3f} ms" for b in (1, 512)]
        lines.append(f"| {name} | {fields} | {params.get(role, 0):,} | "
                     + " | ".join(f"{row[k]:.4f}" for k, _, _ in METRICS) + f" | {lat[0]} | {lat[1]} |")
    names = {"alone": "student alone", "student_best": f"student ← {label(best)}",
             "student_ensemble": "student ← ensemble", "student_plain": f"student ← {label(best)} without "
                                                                           "teacher-only fields"}
    for role, name in names.items():
        lat = [f"{latency[b]['student']:.3f} ms" for b in (1, 512)]
        lines.append(f"| {name} ({seeds} seeds) | serving-time | {params['student']:,} | "
                     + " | ".join(mean_sd([s[k] for s in students[role]]) for k, _, _ in METRICS)
                     + f" | {lat[0]} | {lat[1]} |")
    lines += ["", f"## Paired Δ over {seeds} seeds (mean ± 95% t-interval half-width, in points of 0.01)", "",
              "| comparison | " + " | ".join(f"Δ {m[1]}" for m in METRICS[:3]) + " | verdict (AUC) |",
              "|---|" + "---:|" * 3 + "---|"]
    for a, b, what in PAIRS:
        cells, word = [], ""
        for key, _, higher in METRICS[:3]:
            v = paired_verdict([s[key] for s in students[a]], [s[key] for s in students[b]], higher_is_better=higher)
            half = "" if v.seeds < 2 else f" ± {v.half_width * 100:.2f}"
            cells.append(f"{v.mean * 100:+.2f}{half} ({v.word})")
            word = word or v.word
        lines.append(f"| {what} | " + " | ".join(cells) + f" | {word} |")
    lines += ["", "Per seed (test AUC): " + "; ".join(
        f"seed {s['seed']}: alone {s['auc']:.4f}, ← best {t['auc']:.4f}, ← ensemble {e['auc']:.4f}, ← plain "
        f"{p['auc']:.4f}" for s, t, e, p in zip(students["alone"], students["student_best"],
                                                 students["student_ensemble"], students["student_plain"])) + "."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
