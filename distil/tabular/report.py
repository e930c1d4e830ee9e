"""report.md of a tabular run: each model's task metrics, parameters and latency, and what distillation bought."""

from __future__ import annotations

from pathlib import Path

from distil.checkpoint import atomic_write_text
from distil.tabular.seeds import verdict_lines

LABELS = {"ensemble": "teacher ensemble (mean)", "student": "student (distilled)", "alone": "student (alone)"}
METRICS = {"binary": [("AUC", "auc"), ("gAUC", "gauc"), ("log-loss", "logloss"), ("ECE", "ece")],
           "multiclass": [("accuracy", "accuracy"), ("log-loss", "logloss")],
           "regression": [("RMSE", "rmse"), ("MAE", "mae")]}


def label(role: str) -> str:
    """The row name of a model role (teacher_deepfm -> teacher DeepFM-style name)."""
    return LABELS.get(role, role.replace("teacher_", "teacher ").replace("_", "-"))


def rows(results: dict) -> list[list[str]]:
    """Header and one row per model."""
    metrics = [m for m in METRICS[results["task"]] if any(m[1] in r for r in results["models"].values())]
    batches = sorted({int(k.removeprefix("latency_b").removesuffix("_ms")) for r in results["models"].values()
                      for k in r if k.startswith("latency_b")})
    header = ["model", "fields", "params", *[m[0] for m in metrics], *[f"latency b={b}" for b in batches]]
    out = [header]
    for role, r in results["models"].items():
        out.append([label(role), r["fields"], f"{r['params']:,}", *[f"{r[k]:.4f}" for _, k in metrics],
                    *[f"{r[f'latency_b{b}_ms']:.3f} ms" for b in batches]])
    return out


def gain_lines(results: dict) -> list[str]:
    """Distilled student vs alone and vs its teacher, on each metric, plus speed-up and size ratio."""
    models = results["models"]
    student, alone, teacher = models.get("student"), models.get("alone"), models.get(results["distilled_from"])
    if student is None:
        return []
    lines = []
    for name, key in METRICS[results["task"]]:
        if key in student and alone is not None:
            lines.append(f"- {name}: distilled {student[key]:.4f} vs alone {alone[key]:.4f} "
                         f"(Δ {student[key] - alone[key]:+.4f}); teacher {teacher[key]:.4f}")
    if teacher is not None:
        lines.append(f"- size: {teacher['params'] / max(1, student['params']):.1f}x fewer parameters than "
                     f"{label(results['distilled_from'])}")
        for key in (k for k in student if k.startswith("latency_b")):
            lines.append(f"- {key.removeprefix('latency_').removesuffix('_ms').replace('b', 'batch ')}: "
                         f"{teacher[key] / max(student[key], 1e-9):.1f}x faster than the teacher")
    return lines


def transparent_lines(record: dict | None) -> list[str]:
    """The transparent students' section: AUC, fidelity and size of each, distilled and alone, and their text."""
    if not record:
        return []
    lines = ["", "## Transparent students", "",
             f"Fitted on {record['features']} readable serving-time features (test AUC of the teacher they learn "
             f"from: {record['teacher_auc']:.4f}); fidelity = share of test rows where student and teacher pick the "
             "same class.", "", "| student | trained on | AUC | fidelity | size |", "|---|---|---:|---:|---|"]
    for kind, row in record["students"].items():
        for variant, what in (("distilled", "the teacher's probabilities"), ("alone", "the labels")):
            r = row[variant]
            size = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in r["size"].items())
            lines.append(f"| {kind} | {what} | {r['auc']:.4f} | {r['fidelity']:.4f} | {size} |")
    for kind, row in record["students"].items():
        lines += ["", f"{kind} (distilled):", "", "```", *row["text"], "```"]
    return lines


def render_tabular_text(results: dict) -> str:
    """The table as aligned text and the gain lines, for the terminal."""
    table = rows(results)
    widths = [max(len(r[i]) for r in table) for i in range(len(table[0]))]
    text = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in table]
    verdict = [line.replace("**", "") for line in verdict_lines(results.get("verdict"))]
    transparent = [f"- transparent {kind}: AUC {row['distilled']['auc']:.4f} distilled vs {row['alone']['auc']:.4f} "
                   f"alone, fidelity to the teacher {row['distilled']['fidelity']:.4f} (see report.md)"
                   for kind, row in (results.get("transparent") or {}).get("students", {}).items()]
    return "\n".join([*text, *gain_lines(results), *verdict, *transparent])


def render_tabular_markdown(results: dict) -> str:
    """The whole report.md."""
    table = rows(results)
    r = results["rows"]
    lines = [f"# {results['name']}", "",
             f"Data: {results['dataset']}, task {results['task']}, {r['train']:,} train / {r['val']:,} val / "
             f"{r['test']:,} test rows, split {results['split']}."]
    if results.get("positive_rate") is not None:
        lines.append(f"Positive rate {results['positive_rate']:.4f} (train {results['train_positive_rate']:.4f}).")
    if results["teacher_only"]:
        lines.append(f"Teacher-only (privileged) fields: {', '.join(results['teacher_only'])}; students see the "
                     "serving-time fields only.")
    lines += [f"The student learned from {label(results['distilled_from'])} (validation scores: "
              + ", ".join(f"{label(k)} {v:.4f}" for k, v in results["val_scores"].items()) + ").", "",
              "| " + " | ".join(table[0]) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(table[0]) - 2)) + "|",
              *["| " + " | ".join(row) + " |" for row in table[1:]], "", "## Gains", "", *gain_lines(results)]
    if results.get("verdict"):
        lines += ["", "## Verdict over paired seeds", "", *verdict_lines(results["verdict"])]
    lines += transparent_lines(results.get("transparent"))
    if "export" in results:
        e = results["export"]
        lines += ["", "## Export", "", f"`{Path(e['path']).name}` takes encoded rows of width {e['input_width']} "
                  f"(encoders.json maps raw records to them; `distil.tabular.encoders.encode_records`); max |ONNX - "
                  f"PyTorch| on {e['samples']} test rows: {e['max_abs_diff']:.2e}."]
    return "\n".join(lines) + "\n"


def write_tabular_report(run_dir: Path, results: dict) -> Path:
    """Write report.md into the run folder."""
    path = Path(run_dir) / "report.md"
    atomic_write_text(path, render_tabular_markdown(results))
    return path
