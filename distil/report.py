"""A run's report.md (and, through report_html, report.html) and results.json; the table and the gains come from
distil.report_table (re-exported here)."""

from __future__ import annotations

import json
from pathlib import Path

from distil.card import render_shipping
from distil.checkpoint import atomic_write_text
from distil.errors import DistilError
from distil.explain.summary import render_explain
from distil.report_html import write_html_report
from distil.report_settings import PLOT, plot_lr_find, render_settings
from distil.report_table import COLUMNS, gains, human, render_gains, render_markdown_table, render_text, table_rows
from distil.runlog import MetricsLog
from distil.strategies.tables import render_strategy
from distil.verdict import render_verdict

__all__ = ["COLUMNS", "gains", "human", "load_results", "render_gains", "render_markdown", "render_markdown_table",
           "render_text", "table_rows", "write_report"]


def render_markdown(results: dict) -> str:
    """The whole report.md."""
    g = gains(results)
    return "\n".join([
        f"# distil run `{results['name']}`",
        "",
        f"Data: `{results['dataset']}`, {results['test_samples']} test samples; measured on `{results['device']}`.",
        "",
        *[f"> **Warning:** {w}\n" for w in results.get("warnings", [])],
        render_markdown_table(results),
        "",
        "## What distillation bought",
        "",
        *render_gains(g),
        *render_verdict(results.get("verdict")),
        *([f"- teacher reused from `{results['teacher_reused']}` (same fingerprint), not trained again"]
          if results.get("teacher_reused") else []),
        "",
        *render_settings(results.get("settings", {})),
        *render_shipping(results),
        *(render_explain(results["explain"]) if "explain" in results else []),
        *render_strategy(results),
        "Files: `recipe.yaml` (resolved recipe), `metrics.jsonl` (one line per epoch and stage), "
        "`models/*.pt` (final models), `checkpoints/` (per-stage training state), `results.json`, "
        "`predictions.npz` (test predictions), `report.html` (this report with plots).",
        "",
    ])


def write_report(run_dir: Path, results: dict) -> Path:
    """Write results.json, report.md and report.html into the run folder (atomically); return report.md's path."""
    plot_lr_find(MetricsLog(run_dir / "metrics.jsonl").records(), run_dir / PLOT)
    atomic_write_text(run_dir / "results.json", json.dumps(results, indent=2))
    path = run_dir / "report.md"
    atomic_write_text(path, render_markdown(results))
    write_html_report(run_dir, results)
    return path


def load_results(run_dir: Path) -> dict:
    """The results.json of a finished run, or a DistilError saying the run has not been evaluated."""
    path = Path(run_dir) / "results.json"
    if not path.is_file():
        raise DistilError(f"{path} does not exist; finish the run first (distil run RECIPE --resume).")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        raise DistilError(f"{path} is not valid JSON; rerun the evaluation with distil run RECIPE --resume.") from None
