"""report.md and report.html of a causal-LM run: the side-by-side table (perplexity, bits per character, next-token
accuracy, top-1 agreement with the teacher, generation speed, parameters, bytes), the gain over the student alone,
the corpus and cache lines, and (html) bars, the size/speed trade-off and the training curves."""

from __future__ import annotations

import html
from pathlib import Path

from distil.checkpoint import atomic_write_text
from distil.report import human
from distil.report_html import COLORS, STYLE, _img, _png, plot_curves
from distil.runlog import MetricsLog

COLUMNS = ["model", "params", "size", "ppl", "bits/char", "next-token acc", "agree(T)", "gen tok/s", "tokenizer"]


def table_rows(results: dict) -> list[list[str]]:
    """One row of formatted cells per model, in COLUMNS order."""
    rows = []
    for m in results["models"].values():
        rows.append([m["label"], human(m["params"]), human(m["bytes"], "B", 1024.0), f"{m['perplexity']:.2f}",
                     f"{m['bits_per_char']:.3f}", f"{m['next_token_acc'] * 100:.2f}%",
                     f"{m['agreement'] * 100:.2f}%" if "agreement" in m else "-", f"{m['tokens_per_s']:.0f}",
                     m["tokenizer"].split(" (")[0]])
    return rows


def render_lm_table(results: dict) -> str:
    """The side-by-side table as aligned text."""
    rows = [COLUMNS, *table_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(c.ljust(w) if i in (0, len(COLUMNS) - 1) else c.rjust(w)
                               for i, (c, w) in enumerate(zip(r, widths))).rstrip() for r in rows)


def summary_lines(results: dict) -> list[str]:
    """The bullet lines under the table: gain over alone, losses, corpus, cache, times."""
    models, lines = results["models"], []
    if "alone" in models:
        gain = models["alone"]["bits_per_char"] - models["student"]["bits_per_char"]
        verdict = "better" if gain > 0 else "no better"
        lines.append(f"- distilled vs the same student alone: {gain:+.4f} bits per character saved on held-out text "
                     f"({verdict}; perplexity {models['alone']['perplexity']:.2f} -> "
                     f"{models['student']['perplexity']:.2f}; bits per character compare across tokenizers)")
    lines.append("- losses: " + ", ".join(f"{t['name']} x{t['weight']}" for t in results["losses"]))
    corpus = results["corpus"]
    lines.append(f"- corpus: {corpus['train']} / {corpus['val']} / {corpus['test']} samples (train / val / test); "
                 f"{corpus['empty_lines_dropped']} empty lines dropped, {corpus['long_lines_cut']} extra pieces from "
                 "lines longer than the context")
    if corpus.get("student_truncated"):
        lines.append(f"- {corpus['student_truncated']} training samples, cut to fit the teacher's tokenizer (so one "
                     "teacher cache serves every student), are longer than the context in the student's tokenizer "
                     "and truncated for it")
    if "cache" in results:
        c = results["cache"]
        k = "full logits" if c["topk"] is None else f"top-{c['topk']}"
        read = " (the student's tokenizer reads it through character alignment)" if c.get("aligned") else ""
        lines.append(f"- teacher cache {c['folder']}: {k}, {c['bytes'] / 1e6:.2f} MB, {c['bytes_per_token']:.0f} "
                     f"bytes per position, tokenizer {c['tokenizer']}{read}")
    timings = ", ".join(f"{k} {v:.1f} s" for k, v in results["timings_s"].items())
    if timings:
        lines.append(f"- time: {timings}")
    return lines


def render_lm_markdown(results: dict) -> str:
    """report.md of a causal-LM run."""
    head = [f"# {results['name']}: causal-LM distillation on {results['dataset']}", "", "```",
            render_lm_table(results), "```", ""]
    return "\n".join(head + summary_lines(results)) + "\n"


def plot_lm_bars(results: dict) -> str:
    """Bits per character and next-token accuracy of every model."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    fig.subplots_adjust(left=0.08, right=0.98, top=0.9, bottom=0.2, wspace=0.25)
    for ax, (metric, title) in zip(axes, [("bits_per_char", "held-out bits per character (lower is better)"),
                                          ("next_token_acc", "next-token accuracy")]):
        roles = list(results["models"])
        values = [results["models"][r][metric] for r in roles]
        bars = ax.bar([results["models"][r]["label"] for r in roles], values,
                      color=[COLORS.get(r, "#55a868") for r in roles])
        ax.bar_label(bars, fmt="%.3f", fontsize=8)
        ax.set_ylim(min(values) * 0.9, max(values) * 1.05)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", labelsize=8, rotation=10)
    return _png(fig)


def plot_lm_tradeoff(results: dict) -> str:
    """Bits per character against bytes and against generation speed, one point per model (log x axes)."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    fig, axes = plt.subplots(1, 2, figsize=(8, 3))
    fig.subplots_adjust(left=0.09, right=0.97, top=0.9, bottom=0.17, wspace=0.3)
    for ax, (key, label) in zip(axes, [("bytes", "size (bytes)"), ("tokens_per_s", "generation (tokens/s)")]):
        for role, m in results["models"].items():
            ax.scatter(m[key], m["bits_per_char"], s=60, color=COLORS.get(role, "#55a868"))
            ax.annotate(m["label"], (m[key], m["bits_per_char"]), fontsize=7, xytext=(4, 4),
                        textcoords="offset points")
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.margins(x=0.3, y=0.15)
        ax.set_xlabel(label)
        ax.set_ylabel("bits/char")
        ax.set_title(f"bits per character vs {label.split(' (')[0]}", fontsize=10)
    return _png(fig)


def render_lm_html(results: dict, records: list[dict]) -> str:
    """report.html of a causal-LM run as one self-contained page."""
    import matplotlib

    matplotlib.use("Agg")
    esc = html.escape
    head = "".join(f"<th>{esc(c)}</th>" for c in COLUMNS)
    body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in table_rows(results))
    bullets = "".join(f"<li>{esc(line.removeprefix('- '))}</li>" for line in summary_lines(results))
    corpus = results["corpus"]
    parts = [
        f"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>distil run {esc(results['name'])}"
        f"</title><style>{STYLE}</style></head><body>",
        f"<h1>distil run <code>{esc(results['name'])}</code>: causal-LM distillation</h1>",
        f"<p>Corpus: <code>{esc(str(results['dataset']))}</code>, {corpus['test']} held-out samples; measured on "
        f"<code>{esc(str(results['device']))}</code>.</p>",
        f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>", f"<ul>{bullets}</ul>",
        "<h2>Teacher, distilled student, student alone</h2>", _img(plot_lm_bars(results), "bits per character bars"),
        "<h2>Quality against size and speed</h2>", _img(plot_lm_tradeoff(results), "bits per character vs size"),
    ]
    curves = plot_curves(records)
    if curves:
        parts += ["<h2>Training curves</h2>", _img(curves, "training curves")]
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_lm_report(run_dir: Path, results: dict) -> Path:
    """report.md and report.html of a causal-LM run from its results (and metrics.jsonl); return report.md."""
    run_dir = Path(run_dir)
    path = run_dir / "report.md"
    atomic_write_text(path, render_lm_markdown(results))
    atomic_write_text(run_dir / "report.html", render_lm_html(results, MetricsLog(run_dir / "metrics.jsonl").records()))
    return path
