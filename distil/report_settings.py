"""What the engine chose before each stage trained, for the report: the lr of each range test (`lr: auto`, plotted
in lr_find.png) and the weights `weight: auto` terms were given."""

from __future__ import annotations

import io
from pathlib import Path

from distil.checkpoint import atomic_write_bytes
from distil.extras import available

PLOT = "lr_find.png"


def chosen_settings(records: list[dict]) -> dict:
    """From metrics.jsonl's records: {"lr": {stage: lr}, "weights": {stage: {term: weight}}, "reference": ...}."""
    out: dict = {"lr": {}, "weights": {}, "reference": {}}
    for r in records:
        stage, _, kind = str(r.get("stage", "")).rpartition(":")
        if kind == "lr_find":
            out["lr"][stage] = r["lr"]
        elif kind == "balance":
            out["weights"][stage] = r["weights"]
            out["reference"][stage] = r["reference"]
    return {k: v for k, v in out.items() if v}


def render_settings(settings: dict) -> list[str]:
    """Markdown lines: each stage's chosen lr and auto weights (nothing when neither was automatic)."""
    if not settings:
        return []
    lines = ["## Settings chosen before training", ""]
    for stage, lr in settings.get("lr", {}).items():
        lines.append(f"- {stage}: lr {lr:.3g}, chosen by a learning-rate range test (a tenth of the lr at the "
                     f"smoothed loss's minimum, at most the lr at the middle of its descent; curve in `{PLOT}`)")
    for stage, weights in settings.get("weights", {}).items():
        reference = settings["reference"][stage] or "nothing (weights left at 1)"
        terms = ", ".join(f"{name} {w:.3g}" for name, w in weights.items())
        lines.append(f"- {stage}: weight auto: {terms} (initial gradient norm at its ratio to {reference})")
    return [*lines, ""]


def plot_lr_find(records: list[dict], path: Path) -> bool:
    """Plot every range test of the run (smoothed loss against lr, the chosen lr marked) into `path`; False when
    no stage ran one."""
    tests = [r for r in records if str(r.get("stage", "")).endswith(":lr_find") and r.get("lrs")]
    if not tests or not available("matplotlib"):  # a lean install: report.html says how to get the plots
        return False
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(tests), figsize=(3.6 * len(tests), 2.8), squeeze=False)
    for ax, r in zip(axes[0], tests):
        ax.plot(r["lrs"], r["losses"])
        ax.axvline(r["lr"], color="black", linestyle="--", linewidth=1)
        ax.set_xscale("log")
        ax.set_title(f"{r['stage'].removesuffix(':lr_find')}: lr {r['lr']:.2g}", fontsize=10)
        ax.set_xlabel("lr")
        ax.set_ylabel("smoothed loss")
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72)
    plt.close(fig)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return True
