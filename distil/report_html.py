"""runs/<name>/report.html: one self-contained page (plots embedded as base64 PNG) showing a whole run.

Training curves come from metrics.jsonl, the comparison from results.json, and the student's confusion
matrix from predictions.npz (written by the evaluate stage).
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np
import torch

from distil.checkpoint import atomic_write_text, write_atomically
from distil.extras import available
from distil.report_table import batches, columns, human, render_gains, table_rows
from distil.runlog import MetricsLog
from distil.verdict import render_verdict

COLORS = {"teacher": "#4c72b0", "student": "#dd8452", "alone": "#8c8c8c"}
STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:14px}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}img{max-width:100%;height:auto;display:block;margin:1em 0}
h2{border-bottom:1px solid #ddd;padding-bottom:.2em}
.warning{background:#fff3cd;border-left:4px solid #e0a800;padding:6px 10px}"""


def save_predictions(path: Path, target: torch.Tensor, logits: dict[str, torch.Tensor],
                     class_names: list[str]) -> None:
    """Write the test targets and each model's predicted class (for the confusion matrix) atomically."""
    arrays = {role: value.argmax(-1).numpy() for role, value in logits.items()}
    write_atomically(Path(path), lambda f: np.savez(f, target=target.numpy(), class_names=np.array(class_names),
                                                    **arrays))


def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=72)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _img(data: str, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def curve_groups(records: list[dict]) -> dict[str, list[str]]:
    """Which record fields go on which panel: loss terms, accuracy, learning rate, temperature (when logged)."""
    keys: list[str] = []
    for r in records:
        keys += [k for k in r if k not in keys and isinstance(r[k], int | float) and not isinstance(r[k], bool)]
    groups = {
        "loss": [k for k in keys if k == "loss" or k.startswith("loss_") or k == "val_loss"],
        "accuracy": [k for k in keys if k.endswith("_acc")],
        "learning rate": [k for k in keys if k == "lr"],
        "temperature": [k for k in keys if "temperature" in k],
    }
    return {name: fields for name, fields in groups.items() if fields}


def plot_curves(records: list[dict]) -> str | None:
    """One row of panels per training stage: loss terms, accuracy, LR and temperature against the epoch."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    stages = list(dict.fromkeys(r["stage"] for r in records if "epoch" in r and "model" not in r))
    if not stages:
        return None
    columns = max(len(curve_groups([r for r in records if r.get("stage") == s])) for s in stages)
    height = 2.8 * len(stages)
    fig, axes = plt.subplots(len(stages), columns, figsize=(3.6 * columns, height), squeeze=False)
    fig.subplots_adjust(left=0.07, right=0.98, top=1 - 0.3 / height, bottom=0.5 / height, wspace=0.3, hspace=0.6)
    for row, stage in enumerate(stages):
        rows = [r for r in records if r.get("stage") == stage and "epoch" in r]
        groups = curve_groups(rows)
        for col, ax in enumerate(axes[row]):
            if col >= len(groups):
                ax.axis("off")
                continue
            title, fields = list(groups.items())[col]
            for field in fields:
                points = [(r["epoch"], r[field]) for r in rows if isinstance(r.get(field), int | float)]
                ax.plot(*zip(*points), marker=".", label=field)
            ax.set_title(f"{stage}: {title}", fontsize=10)
            ax.set_xlabel("epoch")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.legend(fontsize=7)
    return _png(fig)


def plot_bars(results: dict) -> str:
    """Top-1 and macro-F1 of every model as horizontal bars from 0 (full labels on the y axis, values at the ends)."""
    return _png(bars_figure(results))


def bars_figure(results: dict):
    """The figure plot_bars draws."""
    import matplotlib.pyplot as plt

    roles = list(results["models"])
    labels = [results["models"][r]["label"] for r in roles]
    height = 1.0 + 0.38 * len(roles)
    fig, axes = plt.subplots(1, 2, figsize=(9, height), sharey=True)
    for ax, (metric, title) in zip(axes, [("top1", "top-1 accuracy"), ("f1", "macro-F1")]):
        values = [results["models"][r].get(metric) for r in roles]
        shown = [v if isinstance(v, int | float) else 0.0 for v in values]
        bars = ax.barh(range(len(roles)), shown, color=[COLORS.get(r, "#55a868") for r in roles])
        ax.bar_label(bars, [f"{v:.3f}" if isinstance(v, int | float) else "n/a" for v in values], padding=3,
                     fontsize=8)
        ax.set_xlim(0.0, 1.12)  # from 0: bar lengths compare as the numbers do; room for the value labels
        ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0])
        ax.set_title(f"{title} (axis from 0)", fontsize=10)
        ax.tick_params(labelsize=8)
    axes[0].set_yticks(range(len(roles)), labels)
    axes[0].invert_yaxis()  # the first model (the teacher) on top, as in the table
    fig.tight_layout()
    return fig



def plot_tradeoff(results: dict) -> str:
    """Accuracy against bytes on disk and against batch-1 latency, one labelled point per model (log x axes)."""
    return _png(tradeoff_figure(results)[0])


def tradeoff_figure(results: dict) -> tuple:
    """The accuracy-vs-size and vs-latency figure and its labels' display boxes (placed so that none overlaps)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.4))
    fig.subplots_adjust(left=0.08, right=0.98, top=0.91, bottom=0.16, wspace=0.25)
    boxes = []
    latency = f"latency at batch {batches(results)[0]} (ms)"
    for ax, (key, label) in zip(axes, [("bytes", "size on disk (bytes)"), ("latency_ms", latency)]):
        points = []
        for role, m in results["models"].items():
            if not (isinstance(m.get(key), int | float) and m[key] > 0 and isinstance(m.get("top1"), int | float)):
                continue
            ax.scatter(m[key], m["top1"], s=60, color=COLORS.get(role, "#55a868"), alpha=0.85, edgecolors="white",
                       linewidths=0.8, zorder=3)
            points.append((m[key], m["top1"], m["label"]))
        ax.set_xscale("log")
        ax.margins(x=0.35, y=0.2)
        ax.autoscale_view()
        low, high = ax.get_xlim()  # ticks at 1, 2, 5 per decade over a short range (labelled within one decade)
        subs = (1.0, 2.0, 5.0) if np.log10(high / low) <= 2.5 else (1.0,)
        ax.xaxis.set_major_locator(LogLocator(subs=subs))
        ax.xaxis.set_major_formatter(FuncFormatter(_byte_tick if key == "bytes" else _plain_tick))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelsize=8)
        ax.set_xlabel(label)
        ax.set_ylabel("top-1")
        ax.set_title(f"accuracy vs {label.split(' (')[0]}", fontsize=10)
        boxes += place_labels(ax, points)
    return fig, boxes


# label positions tried around a point, nearest first: (dx, dy) in points and the text's alignment there
_SPOTS = [(dx * r, dy * r, "left" if dx > 0 else "right", "bottom" if dy > 0 else "top")
          for r in (1, 2.5, 4, 6, 8) for dx, dy in ((5, 4), (5, -4), (-5, 4), (-5, -4))]


def place_labels(ax, points: list[tuple[float, float, str]]) -> list:
    """Label each (x, y, text) point where its label overlaps no other label and no marker, inside the figure always
    and inside the axes when it can; points whose markers overlap share one label (their names, highest first), and
    a label set apart gets a thin leader line to its point. Returns the labels' display boxes."""
    fig = ax.figure
    renderer = fig.canvas.get_renderer()
    frame, page = ax.get_window_extent(renderer), fig.bbox
    marker = 4 * fig.dpi / 72  # half a marker of s=60 (7.7 points across), in pixels
    centres = [tuple(ax.transData.transform((x, y))) for x, y, _ in points]
    taken = [_box(cx, cy, marker) for cx, cy in centres]
    boxes = []
    for group in sorted(_overlapping(centres, 2 * marker), key=lambda g: -max(points[k][1] for k in g)):
        members = sorted(group, key=lambda k: -points[k][1])
        x, y = points[members[0]][0], points[members[0]][1]
        text = "\n".join(points[k][2] for k in members)
        best = None
        for dx, dy, ha, va in _SPOTS:
            leader = {"arrowstyle": "-", "lw": 0.5, "color": "#777"} if abs(dx) > 5 else None
            label = ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points", ha=ha, va=va,
                                fontsize=7, arrowprops=leader)
            box = label.get_window_extent(renderer)
            score = (not _within(box, page), sum(box.overlaps(t) for t in taken), not _within(box, frame))
            if best is None or score < best[0]:
                if best is not None:
                    best[1].remove()
                best = (score, label, box)
            else:
                label.remove()
            if score == (False, 0, False):
                break
        taken.append(best[2])
        boxes.append(best[2])
    return boxes


def _overlapping(centres: list[tuple[float, float]], reach: float) -> list[list[int]]:
    """The points as groups whose markers touch (centres nearer than `reach` pixels, chained)."""
    group = list(range(len(centres)))

    def root(k: int) -> int:
        while group[k] != k:
            k = group[k]
        return k

    for i, (xi, yi) in enumerate(centres):
        for j in range(i):
            if np.hypot(xi - centres[j][0], yi - centres[j][1]) < reach:
                group[root(i)] = root(j)
    found: dict[int, list[int]] = {}
    for k in range(len(centres)):
        found.setdefault(root(k), []).append(k)
    return list(found.values())


def _box(x: float, y: float, half: float):
    from matplotlib.transforms import Bbox

    return Bbox([[x - half, y - half], [x + half, y + half]])


def _within(box, outer) -> bool:
    return outer.x0 <= box.x0 and box.x1 <= outer.x1 and outer.y0 <= box.y0 and box.y1 <= outer.y1


def _byte_tick(value: float, _position: int) -> str:
    return human(value, "B")


def _plain_tick(value: float, _position: int) -> str:
    return f"{value:g}"


def confusion(target: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """counts[true, predicted]."""
    counts = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(counts, (target, predicted), 1)
    return counts


def plot_confusion(target: np.ndarray, predicted: np.ndarray, class_names: list[str]) -> str:
    """The distilled student's confusion matrix on the test split (rows: true class, columns: predicted)."""
    import matplotlib.pyplot as plt

    counts = confusion(target, predicted, len(class_names))
    size = min(9.0, 2.5 + 0.35 * len(class_names))
    fig, ax = plt.subplots(figsize=(size, size))
    fig.subplots_adjust(left=0.14, right=0.97, top=0.93, bottom=0.14)
    ax.imshow(counts, cmap="Blues")
    if len(class_names) <= 20:
        ticks = range(len(class_names))
        ax.set_xticks(ticks, class_names, rotation=90, fontsize=7)
        ax.set_yticks(ticks, class_names, fontsize=7)
        for (i, j), n in np.ndenumerate(counts):
            if n:
                ax.text(j, i, str(n), ha="center", va="center", fontsize=6,
                        color="white" if n > counts.max() / 2 else "black")
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("student (distilled): confusion matrix", fontsize=10)
    return _png(fig)


def render_html(results: dict, records: list[dict], predictions: dict[str, np.ndarray] | None,
                lr_find: str | None = None) -> str:
    """The whole page as a string (`lr_find`: the range tests' plot as base64 PNG, when the run has one)."""
    plots = available("matplotlib")
    if plots:
        import matplotlib

        matplotlib.use("Agg")
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in columns(results))
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in table_rows(results))
    lines = [*render_gains(results.get("gains", {})), *render_verdict(results.get("verdict"))]
    gains = "".join(f"<li>{esc(line.removeprefix('- ').replace('**', ''))}</li>" for line in lines)
    warnings = "".join(f"<p class=\"warning\"><strong>Warning:</strong> {esc(w)}</p>"
                       for w in results.get("warnings", []))
    parts = [
        f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>distil run {esc(results['name'])}"
        f"</title><style>{STYLE}</style></head><body>",
        f"<h1>distil run <code>{esc(results['name'])}</code></h1>",
        f"<p>Data: <code>{esc(str(results['dataset']))}</code>, {results['test_samples']} test samples; measured on "
        f"<code>{esc(str(results['device']))}</code>.</p>",
        warnings,
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>",
        f"<ul>{gains}</ul>" if gains else "",
    ]
    if not plots:
        parts += ["<p>The plots need matplotlib: <code>pip install 'distil[report]'</code>.</p>", "</body></html>\n"]
        return "\n".join(parts)
    parts += [
        "<h2>Teacher, distilled student, student alone</h2>", _img(plot_bars(results), "accuracy bars"),
        "<h2>Accuracy against size and latency</h2>", _img(plot_tradeoff(results), "accuracy vs size and latency"),
    ]
    if lr_find is not None:
        parts += ["<h2>Learning-rate range tests</h2>", _img(lr_find, "learning-rate range tests")]
    curves = plot_curves(records)
    if curves:
        parts += ["<h2>Training curves</h2>", _img(curves, "training curves")]
    if predictions is not None and "student" in predictions:
        names = [str(n) for n in predictions["class_names"]]
        parts += ["<h2>Confusion matrix</h2>",
                  _img(plot_confusion(predictions["target"], predictions["student"], names), "confusion matrix")]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_html_report(run_dir: Path, results: dict) -> Path:
    """Render report.html from results.json's content, metrics.jsonl and predictions.npz; return its path."""
    run_dir = Path(run_dir)
    records = MetricsLog(run_dir / "metrics.jsonl").records()
    predictions = None
    if (run_dir / "predictions.npz").is_file():
        with np.load(run_dir / "predictions.npz") as data:
            predictions = {k: data[k] for k in data.files}
    plot = run_dir / "lr_find.png"
    lr_find = base64.b64encode(plot.read_bytes()).decode("ascii") if plot.is_file() else None
    path = run_dir / "report.html"
    atomic_write_text(path, render_html(results, records, predictions, lr_find))
    return path
