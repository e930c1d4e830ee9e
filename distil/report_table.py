"""The numbers of a run's report, computed in one place: the side-by-side table (teacher, distilled student, student
trained alone) and the gain lines; report.md, report.html, the model card and the CLI all render from here."""

from __future__ import annotations

COLUMNS = ["model", "params", "size", "top-1", "macro-F1", "agree(T)", "ECE", "latency b=1", "thrpt b=256"]


def batches(results: dict) -> tuple[int, int]:
    """The batch sizes latency and throughput were measured at (eval.latency_batch / throughput_batch; results of
    older runs record none: the defaults 1 and 256)."""
    return int(results.get("latency_batch", 1)), int(results.get("throughput_batch", 256))


def columns(results: dict) -> list[str]:
    """The table's header for this run: COLUMNS with the batch sizes its latency and throughput were measured at."""
    latency, throughput = batches(results)
    return [*COLUMNS[:-2], f"latency b={latency}", f"thrpt b={throughput}"]


def human(n: float, unit: str = "", base: float = 1000.0) -> str:
    """1234567 -> '1.23M' (with `unit` appended)."""
    for suffix in ["", "k", "M", "G", "T"]:
        if abs(n) < base:
            return f"{n:.3g}{suffix}{unit}" if suffix or isinstance(n, float) else f"{int(n)}{unit}"
        n /= base
    return f"{n:.3g}P{unit}"


def table_rows(results: dict) -> list[list[str]]:
    """One row of formatted cells per model, in COLUMNS order."""
    rows = []
    for m in results["models"].values():
        rows.append([
            m["label"], human(m["params"]), human(m["bytes"], "B", 1024.0), f"{m['top1'] * 100:.2f}%",
            f"{m['f1']:.4f}", f"{m['agreement'] * 100:.2f}%" if "agreement" in m else "-", f"{m['ece']:.4f}",
            f"{m['latency_ms']:.3f} ms", f"{human(m['throughput'])}/s",
        ])
    return rows


def render_text(results: dict) -> str:
    """The table as aligned plain text, for the terminal."""
    rows = [columns(results), *table_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(COLUMNS))]
    lines = ["  ".join(cell.ljust(w) if i == 0 else cell.rjust(w) for i, (cell, w) in enumerate(zip(r, widths)))
             for r in rows]
    return "\n".join(lines)


def render_markdown_table(results: dict) -> str:
    """The table as a Markdown table."""
    lines = ["| " + " | ".join(columns(results)) + " |", "|" + "|".join(["---"] + ["---:"] * (len(COLUMNS) - 1)) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in table_rows(results)]
    return "\n".join(lines)


def gains(results: dict) -> dict[str, float]:
    """What distillation bought: accuracy vs the student alone and vs the teacher, compression and speed-up."""
    models = results["models"]
    teacher, student = models.get("teacher"), models.get("student")
    if teacher is None or student is None:
        return {}
    out = {
        "delta_top1_vs_teacher": student["top1"] - teacher["top1"],
        "compression": teacher["bytes"] / student["bytes"],
        "param_ratio": teacher["params"] / student["params"],
        "speedup_latency": teacher["latency_ms"] / student["latency_ms"],
        "speedup_throughput": student["throughput"] / teacher["throughput"],
    }
    out["latency_batch"], out["throughput_batch"] = batches(results)
    if "alone" in models:
        out["delta_top1_vs_alone"] = student["top1"] - models["alone"]["top1"]
    return out


def render_gains(g: dict[str, float]) -> list[str]:
    """Bullet lines describing what distillation bought."""
    lines = []
    if "delta_top1_vs_alone" in g:
        lines.append(f"- Δ top-1 vs the same student trained alone: {g['delta_top1_vs_alone'] * 100:+.2f} points")
    if g:
        lines += [
            f"- Δ top-1 vs the teacher: {g['delta_top1_vs_teacher'] * 100:+.2f} points",
            f"- compression: {g['compression']:.1f}× smaller on disk ({g['param_ratio']:.1f}× fewer parameters)",
            f"- speed-up: {g['speedup_latency']:.1f}× lower latency at batch {g.get('latency_batch', 1)}, "
            f"{g['speedup_throughput']:.1f}× higher throughput at batch {g.get('throughput_batch', 256)}",
        ]
    return lines
