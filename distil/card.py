"""MODEL_CARD.md of a run (data, teacher, method, metrics, size, latency, intended use, limits), the report's
compression section."""

from __future__ import annotations

from pathlib import Path

from distil.checkpoint import atomic_write_text
from distil.recipe import LossTerm, ModelConfig, Recipe
from distil.report_table import render_markdown_table

SHIP_ROLES = ("student", "pruned", "int8", "onnx")


def _model_text(cfg: ModelConfig) -> str:
    fields = set(ModelConfig.model_fields) - {"name"}
    sizes = {k: v for k, v in cfg.model_dump(include=fields).items() if v not in (None, 0.0, [])}
    return f"`{cfg.name}`" + (f" ({', '.join(f'{k} {v}' for k, v in sizes.items())})" if sizes else "")


def _losses_text(terms: list[LossTerm]) -> str:
    return " + ".join(f"{_number(t.weight)}·{t.name}" + (f" ({', '.join(f'{k}={v}' for k, v in t.params.items())})"
                                                   if t.params else "") for t in terms)


def _number(value: float | str | None) -> str:
    """A weight or an lr as written in a recipe: 0.5, 0.003, or auto."""
    return f"{value:g}" if isinstance(value, float | int) else str(value)


def _kib(n: float) -> str:
    return f"{n / 1024:.1f} KiB"


def render_shipping(results: dict) -> list[str]:
    """The report section on compression and export: each step against the fp32 student, then the details."""
    if "compress" not in results and "export" not in results:
        return []
    models, cpu = results["models"], results.get("cpu_latency_ms", {})
    base = models["student"]
    base_latency = cpu.get("student", base["latency_ms"])
    lines = ["## What compression and export bought", "",
             "Each step against the distilled fp32 student; latency on the CPU (batch 1, median).", "",
             "| step | top-1 | Δ top-1 | size | × smaller | latency | × faster | agrees with its fp32 source |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for role in SHIP_ROLES:
        if role not in models:
            continue
        m = models[role]
        latency = cpu.get(role, m["latency_ms"])
        agree = f"{m['agreement_source'] * 100:.2f}%" if "agreement_source" in m else "-"
        lines.append(f"| {m['label']} | {m['top1'] * 100:.2f}% | {(m['top1'] - base['top1']) * 100:+.2f} | "
                     f"{_kib(m['bytes'])} | {base['bytes'] / m['bytes']:.2f}× | {latency:.3f} ms | "
                     f"{base_latency / latency:.2f}× | {agree} |")
    lines.append("")
    compress, export = results.get("compress", {}), results.get("export", {})
    if p := compress.get("prune"):
        if p["method"] == "structured":
            widths = ", ".join(f"`{k}` → {v}" for k, v in p["widths"].items())
            what = (f"structured: {p['amount']:.0%} of the output channels of each prunable layer removed by L1 norm "
                    f"({widths}); parameters {p['params_before']:,} → {p['params_after']:,}")
        else:
            what = (f"unstructured: {p['amount']:.0%} of all Linear/Conv weights zeroed by global magnitude (weight "
                    f"sparsity {p['weight_sparsity']:.1%}); the dense file does not shrink and dense kernels do not "
                    "run faster")
        recovery = (f"{p['recovery_epochs']} epochs of recovery distillation from the unpruned student"
                    if p["recovery_epochs"] else "no recovery")
        lines.append(f"- Pruning, {what}. Top-1 right after pruning {p['top1_before_recovery'] * 100:.2f}%, "
                     f"then {recovery}.")
    if qz := compress.get("quantize"):
        how = (f"FX graph mode, calibrated on {qz['calibration_samples']} training samples" if qz["mode"] == "static"
               else "torch.ao quantize_dynamic on Linear/LSTM")
        lines.append(f"- Quantization: int8 {qz['mode']} ({how}, {qz['backend']} backend) of the {qz['source']} "
                     "model; it runs on the CPU.")
    if export:
        lines.append(f"- Export: `{export['file']}` (ONNX opset {export['opset']}, dynamic batch axis, sha256 "
                     f"`{export['sha256'][:16]}…`) of the {export['source']} model. ONNX Runtime against PyTorch on "
                     f"{export['samples']} test samples: max |Δ logit| {export['max_abs_diff']:.2g} (allowed "
                     f"{export['atol']:g} + {export['rtol']:g}·|logit|), top-1 changed on "
                     f"{export['top1_changed']:.2%} (allowed {export['max_top1_change']:.2%}).")
    lines.append("")
    return lines


def render_card(recipe: Recipe, results: dict) -> str:
    """The whole MODEL_CARD.md."""

    models, export = results["models"], results.get("export")
    shipped = "onnx" if export else "pruned" if "pruned" in models else "student"
    row = models[shipped]
    teacher = models.get("teacher", {})
    t = recipe.teacher
    files = [f"`{export['file']}` (ONNX, sha256 `{export['sha256']}`)"] if export else []
    files += [f"`models/{name}`" for role, name in (("pruned", "student-pruned.pt"), ("int8", "student-int8.pt"))
              if role in models] + ["`models/student.pt` (distilled, fp32)"]
    d = recipe.distill
    method = [f"- Distillation: loss {_losses_text(d.losses)}, {d.epochs or recipe.train.epochs} epochs, "
              f"{recipe.train.optimizer} lr {_number(recipe.train.lr)}, batch {recipe.train.batch_size}, "
              f"seed {recipe.seed}."]
    if "alone" in models:
        method.append("- Baseline: the same student trained on the labels alone, with the same settings.")
    c = recipe.compress
    if c is not None and c.prune is not None:
        method.append(f"- Pruning: {c.prune.method}, amount {c.prune.amount:g}, then {c.prune.recovery_epochs} "
                      f"epochs of recovery distillation ({_losses_text(c.prune.losses)}) from the unpruned student.")
    if c is not None and c.quantize is not None:
        method.append(f"- Quantization: int8 {results['compress']['quantize']['mode']}, {c.quantize.backend} backend.")
    if export:
        method.append(f"- Export: ONNX opset {export['opset']}, checked with ONNX Runtime against PyTorch.")
    teacher_line = f"checkpoint `{t.checkpoint}`" if t.checkpoint else _model_text(t)
    scaling = ("standardized with the mean and std of the training split" if recipe.data.normalize
               else "no standardization")
    lines = [
        f"# Model card: `{results['name']}`",
        "",
        f"A {_model_text(recipe.student)} student distilled from a larger teacher by distil; the shipped model is "
        f"**{row['label']}**.",
        "",
        "## Model",
        "",
        f"- Files (in the run folder): {', '.join(files)}.",
        f"- Parameters {row['params']:,}; size {_kib(row['bytes'])}; top-1 {row['top1'] * 100:.2f}% on the test split.",
        "",
        "## Data",
        "",
        f"- Dataset `{results['dataset']}`, split seed {recipe.data.split_seed}; {results['test_samples']} test "
        f"samples; every model below is evaluated on the same split.",
        f"- Inputs: raw values as the dataset holds them; the model file carries its preprocessing ({scaling}) "
        "and `distil serve` / `distil eval` apply it; `GET /metadata` gives the shape, the statistics and an "
        "example request.",
        "",
        "## Teacher",
        "",
        f"- {teacher_line}; {teacher.get('params', 0):,} parameters; top-1 "
        f"{teacher.get('top1', float('nan')) * 100:.2f}% on the same test split.",
        "",
        "## Method",
        "",
        *method,
        "",
        "## Metrics, size and latency",
        "",
        f"Test split; latency is the median at batch {recipe.eval.latency_batch}, throughput at batch "
        f"{recipe.eval.throughput_batch}; measured on `{results['device']}` (int8 and ONNX Runtime rows on the CPU).",
        "",
        render_markdown_table(results),
        "",
        *render_shipping(results),
        "## Intended use",
        "",
        f"Classifying inputs from the same distribution as `{results['dataset']}`, preprocessed as above, where a "
        "small and fast model matters more than the last point of accuracy; a baseline for comparing compression "
        "methods.",
        "",
        "## Limits",
        "",
        f"- Measured only on {results['test_samples']} test samples of `{results['dataset']}`; other data, shifted "
        "distributions or adversarial inputs can do much worse, and nothing here was checked for fairness.",
        f"- The student inherits the teacher's mistakes: it agrees with the teacher on "
        f"{row.get('agreement', float('nan')) * 100:.2f}% of the test split. Probabilities are not guaranteed "
        f"calibrated (ECE {row['ece']:.3f}).",
        "- Latency and throughput are from one machine and batch size; they differ on other hardware. The int8 "
        "model needs PyTorch's quantized CPU kernels.",
        "",
    ]
    return "\n".join(lines)


def write_model_card(run_dir: Path, recipe: Recipe, results: dict) -> Path:
    """Write MODEL_CARD.md into the run folder (atomically) and return its path."""
    path = Path(run_dir) / "MODEL_CARD.md"
    atomic_write_text(path, render_card(recipe, results))
    return path
