"""The `distil` command: run, init, show-config, methods, models, eval, report, export, serve."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from distil import __version__
from distil.errors import DistilError
from distil.extras import require

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distill a large teacher into a small, fast student and compare them side by side.")


def _print_version(value: bool) -> None:
    if value:
        typer.echo(f"distil {__version__}")
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[bool, typer.Option("--version", callback=_print_version, is_eager=True,
                                          help="print the version and exit")] = False,
) -> None:
    """Distill a large teacher into a small, fast student and compare them side by side."""


TRUST_HELP = ("DANGEROUS: rebuild a model file that names a python: factory by importing and running that code; "
              "only for files you wrote")


def say(text: str, quiet: bool = False) -> None:
    """Print to stdout unless quiet."""
    if not quiet:
        typer.echo(text)


@app.command()
def run(
    recipe: Annotated[Optional[Path], typer.Argument(help="recipe YAML (default: the built-in digits recipe)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override a field, e.g. train.epochs=30")] = [],  # noqa: B006
    resume: Annotated[bool, typer.Option(help="continue the run folder from its last checkpoint")] = False,
    overwrite: Annotated[bool, typer.Option(help="delete an existing run folder of the same name first")] = False,
    runs_dir: Annotated[Path, typer.Option(help="where run folders are written")] = Path("runs"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars or table")] = False,
    seeds: Annotated[Optional[int], typer.Option(help="paired seeds of the distilled and the alone student (sets "
                                                 "eval.seeds): Δ as mean ± 95% interval and a verdict")] = None,
) -> None:
    """Train the teacher, distill the student, train the student alone, evaluate all three and write the report."""
    from distil.distributed import is_main
    from distil.pipeline import run_recipe
    from distil.recipe import load_recipe

    quiet = quiet or not is_main()  # under torchrun only rank 0 prints
    loaded = load_recipe(recipe, [*set_, *([f"eval.seeds={seeds}"] if seeds is not None else [])])
    result = run_recipe(loaded, runs_dir, resume=resume, overwrite=overwrite, quiet=quiet)
    say(result.text if hasattr(result, "text") else summary(result.results), quiet)  # LM / tabular: own tables
    say(f"report: {result.run_dir / 'report.md'}", quiet)


@app.command()
def cache(
    recipe: Annotated[Optional[Path], typer.Argument(help="recipe YAML (default: the built-in digits recipe)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override a field, e.g. cache.dtype=fp32")] = [],  # noqa: B006
    runs_dir: Annotated[Path, typer.Option(help="where run folders are written")] = Path("runs"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no progress bars")] = False,
) -> None:
    """Train (or load) the teacher and write its outputs to the run's cache; then `distil run RECIPE --resume`."""
    from distil.pipeline import Run
    from distil.recipe import load_recipe

    loaded = load_recipe(recipe, set_)
    if loaded.cache is None:
        raise DistilError("cache: the recipe has no cache section; add `cache: {dtype: fp16}` to it (or pass "
                          "--set cache.dtype=fp16) so that `distil run` reads the same cache.")
    if loaded.lm is not None:  # a causal-LM recipe: the teacher's token cache (the text extra)
        from distil.text.lm_run import LMRun

        run_ = LMRun(loaded, runs_dir, resume=True, quiet=quiet)
    else:
        run_ = Run(loaded, runs_dir, resume=True, quiet=quiet)
    teacher_cache = run_.cache(run_.teach())
    layout = teacher_cache.layout
    say(f"cache: {teacher_cache.folder} ({layout.samples} samples x {layout.views} views, {layout.dtype}"
        f"{f', top-{layout.topk}' if layout.topk else ''}, {len(layout.arrays)} arrays)", quiet)


@app.command()
def sweep(
    recipe: Annotated[Optional[Path], typer.Argument(help="recipe YAML (default: the built-in digits recipe)")] = None,
    param: Annotated[list[str], typer.Option("--param", help="a searched field: KEY=a,b,c (choices), KEY=LOW:HIGH "
                                             "or KEY=LOW:HIGH:log (a range)")] = [],  # noqa: B006
    set_: Annotated[list[str], typer.Option("--set", help="a fixed override for every trial")] = [],  # noqa: B006
    trials: Annotated[int, typer.Option(help="finished trials wanted in the study (earlier runs count)")] = 20,
    jobs: Annotated[int, typer.Option(help="trials run at once, in processes (at most the cores)")] = 1,
    name: Annotated[Optional[str], typer.Option(help="sweep folder under --runs-dir (default: <recipe name>-sweep)")]
    = None,
    runs_dir: Annotated[Path, typer.Option(help="where run folders are written")] = Path("runs"),
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="no per-trial lines")] = False,
) -> None:
    """Search recipe settings with Optuna (resumable SQLite study), maximizing the student's validation accuracy."""
    from distil.sweep import run_sweep

    best = run_sweep(recipe, param, trials=trials, jobs=jobs, overrides=set_, runs_dir=runs_dir, name=name,
                     quiet=quiet)
    settings = " ".join(f"--set {k}={v}" for k, v in best["best_params"].items())
    say(f"best of {best['trials']} trials: val acc {best['best_value']:.4f} with {settings}", quiet)
    say(f"report: {best['report']}", quiet)


@app.command()
def methods() -> None:
    """List the registered distillation losses with their parameters and paper."""
    from distil.methods import describe_methods

    for row in describe_methods():
        params = ", ".join(f"{k}=<required>" if v.get("required") else f"{k}={v['default']}"
                           for k, v in row["params"].items()) or "-"
        typer.echo(f"{row['name']:<12} {row['summary']}")
        typer.echo(f"{'':<12} params: {params}")
        typer.echo(f"{'':<12} paper: {row['paper']}")


def parse_shape(text: str) -> tuple[int, ...]:
    """`1,28,28` as (1, 28, 28), or a DistilError naming --input-shape."""
    try:
        shape = tuple(int(side) for side in text.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise DistilError(f"--input-shape: '{text}' is not a shape; give positive sizes without the batch axis, "
                          "e.g. 1,28,28 or 40.")
    return shape


@app.command()
def models(
    input_shape: Annotated[str, typer.Option(help="one sample's shape, no batch axis: C,H,W (images), C,L or L")]
    = "3,32,32",
    classes: Annotated[int, typer.Option(help="number of classes the model predicts")] = 10,
) -> None:
    """List the model zoo with each model's parameters for an input shape and its recipe options."""
    from distil.models import zoo_rows
    from distil.models.registry import registered_lines

    shape = parse_shape(input_shape)
    if classes < 1:
        raise DistilError(f"--classes: {classes} is not a class count; give 2 or more, e.g. --classes 10.")
    rows = zoo_rows(shape, classes)
    typer.echo(f"{'model':<16} {'parameters':>11}  {'options':<17} inputs {shape}, {classes} classes")
    for row in rows:
        size = f"{row.parameters:,}" if row.parameters is not None else "-"
        options = ", ".join(row.options) or "-"
        typer.echo(f"{row.name:<16} {size:>11}  {options:<17} {row.description}")
    if any(row.problem for row in rows):
        typer.echo(f"-: the model cannot take inputs shaped {shape} (image models need C,H,W).")
    typer.echo("wrn_<depth>_<width> and soft_tree_<depth> name other sizes, e.g. wrn_28_4, soft_tree_6.")
    typer.echo("python:package.module:factory    a user model factory(input_shape=..., num_classes=...)")
    typer.echo("checkpoint:path/to/model.pt      a model saved by distil")
    for shown, line in registered_lines():  # text's models register themselves (distil.plugins)
        typer.echo(f"{shown:<32} text: {line}")


@app.command()
def init(
    dataset: Annotated[str, typer.Argument(help="the dataset the recipe trains on (see data.name)")] = "digits",
    out: Annotated[Optional[Path], typer.Option(help="the recipe file to write (default: <dataset>.yaml)")] = None,
    data_path: Annotated[Optional[str], typer.Option(help="data.path: the file of csv / npz / text_csv / text_jsonl")]
    = None,
    force: Annotated[bool, typer.Option(help="replace the file if it exists")] = False,
) -> None:
    """Write a commented starter recipe with every section for a dataset; `distil run` takes it as written."""
    from distil.data import load_dataset
    from distil.starter import starter_recipe, write_starter

    recipe = starter_recipe(dataset, data_path)
    splits = load_dataset(recipe.data, seed=recipe.seed)  # a missing file or tokenizer fails here, not at `run`
    dest = out or Path(f"{dataset}.yaml")
    header = (f"A starter recipe for {dataset}: {len(splits.train)} training samples shaped "
              f"{tuple(splits.input_shape)}, {splits.num_classes} classes.\n"
              f"Run it with `distil run {dest}`; change a field here or with --set KEY=VALUE.\n"
              "Every field is written out with its default; sections marked off are commented out: remove the\n"
              "leading '# ' of a section's lines to turn it on. `distil show-config` prints what a run will use.")
    write_starter(recipe, header, dest, force)
    typer.echo(f"wrote {dest}; run it with `distil run {dest}`")


@app.command("show-config")
def show_config(
    recipe: Annotated[Optional[Path], typer.Argument(help="recipe YAML (default: the built-in digits recipe)")] = None,
    set_: Annotated[list[str], typer.Option("--set", help="override a field, e.g. train.epochs=30")] = [],  # noqa: B006
) -> None:
    """Print the resolved recipe (every default filled in, --set applied) that `distil run` would use."""
    from distil.recipe import dump_recipe, load_recipe

    typer.echo(dump_recipe(load_recipe(recipe, set_)), nl=False)


@app.command("eval")
def evaluate(
    model_file: Annotated[Path, typer.Argument(help="a model file, e.g. runs/<name>/models/student.pt")],
    data: Annotated[Optional[str], typer.Option(help="dataset name (digits, mnist1d, fashion_mnist, synthetic, "
                                                     "npz, csv; default: the one the model file or its run "
                                                     "records)")] = None,
    data_path: Annotated[Optional[str], typer.Option(help="file or folder for npz / csv / fashion_mnist")] = None,
    split: Annotated[str, typer.Option(help="train, val or test")] = "test",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
    trust_code: Annotated[bool, typer.Option(help=TRUST_HELP)] = False,
) -> None:
    """Evaluate a saved model (plain, pruned or int8) on a dataset split: accuracy, F1, calibration, size, latency."""
    from distil.compress.files import load_any
    from distil.data import load_dataset
    from distil.engine import predict, resolve_device, targets_of
    from distil.metrics import classification_metrics
    from distil.profile import profile_model
    from distil.recipe import EvalConfig
    from distil.report import render_text

    if split not in {"train", "val", "test"}:
        raise DistilError(f"--split: '{split}' is not a split; use train, val or test.")
    model, meta = load_any(model_file, trust_code=trust_code)
    if (meta.get("preprocess") or {}).get("kind") == "records":  # tabular: the table and encoders it records
        from distil.tabular.evaluate import evaluate_tabular_file

        typer.echo(evaluate_tabular_file(model, meta, model_file.name, split, resolve_device(device)))
        return
    splits = load_dataset(eval_data(model_file, meta, data, data_path))
    if tuple(meta["input_shape"]) != tuple(splits.input_shape) or meta["num_classes"] != splits.num_classes:
        raise DistilError(f"{model_file} expects inputs {tuple(meta['input_shape'])} with {meta['num_classes']} "
                          f"classes but --data {data} has {tuple(splits.input_shape)} with {splits.num_classes}; "
                          "evaluate it on the data it was trained on.")
    dataset = getattr(splits, split)
    run_device = resolve_device("cpu" if meta.get("quantized") else device)  # int8 kernels run on the CPU
    model = model.to(run_device)
    metrics = classification_metrics(predict(model, dataset, run_device), targets_of(dataset), splits.num_classes)
    if hasattr(splits, "profile"):  # text: timed on real tokenized test sentences, as a run does
        metrics.update(splits.profile(model, run_device, EvalConfig()))
    else:
        metrics.update(profile_model(model, splits.input_shape, run_device))
    typer.echo(render_text({"models": {"model": {"label": model_file.name, **metrics}}}))


def eval_data(model_file: Path, meta: dict, name: str | None, path: str | None):
    """The data `distil eval` reads: --data (tokenized as the model's own preprocessing says), else the data
    section the model file or its run folder's recipe.yaml records."""
    from distil.compress.stage import run_folder_of
    from distil.recipe import DataConfig, load_recipe

    if name is None:
        if isinstance(meta.get("data"), dict):
            return DataConfig.model_validate(meta["data"])
        folder = run_folder_of(model_file)
        if folder is None:
            raise DistilError(f"{model_file} records no dataset and is not inside a run folder; pass --data NAME "
                              "(and --data-path).")
        return load_recipe(folder / "recipe.yaml").data
    cfg = DataConfig(name=name, path=path)
    spec = meta.get("preprocess") or {}
    if spec.get("kind") == "tokenizer":  # text: the model's own tokenizer and length
        cfg.text.tokenizer, cfg.text.max_length = spec["folder"], int(spec["max_length"])
    return cfg


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run folder, e.g. runs/digits-kd")]) -> None:
    """Re-render report.md of a finished run from its results.json; print the table and gains as `distil run` does."""
    from distil.report import load_results, write_report

    results = load_results(run_dir)
    if results.get("kind") == "lm":  # a causal-LM run (the text extra) has its own report
        from distil.text.lm_report import render_lm_table, write_lm_report

        path = write_lm_report(run_dir, results)
        say(render_lm_table(results))
    elif "task" in results and "distilled_from" in results:  # a tabular run: its own report and table
        from distil.tabular.report import render_tabular_text, write_tabular_report

        path = write_tabular_report(run_dir, results)
        say(render_tabular_text(results))
    else:
        path = write_report(run_dir, results)
        say(summary(results))
    say(f"report: {path}")


def summary(results: dict) -> str:
    """The table and the gain lines `distil run` and `distil report` print."""
    from distil.report import gains, render_gains, render_text
    from distil.verdict import render_verdict

    warnings = [f"warning: {w}" for w in results.get("warnings", [])]
    verdict = [line.replace("**", "") for line in render_verdict(results.get("verdict"))]
    return "\n".join([*warnings, render_text(results), *render_gains(gains(results)), *verdict])


@app.command()
def explain(
    run_dir: Annotated[Path, typer.Argument(help="a run folder whose recipe has an explain section")],
    input_: Annotated[Optional[int], typer.Option("--input", help="also show how test sample N is decided")] = None,
) -> None:
    """Print a run's transparent students: scores, rules, feature importance, and a test sample's decision path."""
    from distil.explain.show import explain_run

    typer.echo(explain_run(run_dir, input_))


@app.command()
def export(
    target: Annotated[Path, typer.Argument(help="a run folder (runs/<name>) or a model file (.pt)")],
    out: Annotated[Optional[Path], typer.Option(help="the .onnx file (default: models/student.onnx of the run, "
                                                     "or the model file's name with .onnx)")] = None,
    data: Annotated[Optional[str], typer.Option(help="dataset of the parity check (default: the run's data)")] = None,
    data_path: Annotated[Optional[str], typer.Option(help="file or folder for npz / csv / fashion_mnist")] = None,
    trust_code: Annotated[bool, typer.Option(help=TRUST_HELP)] = False,
) -> None:
    """Export a run's shipped fp32 student (or a model file) to ONNX, checked with ONNX Runtime on the test split."""
    from distil.compress.stage import export_file
    from distil.recipe import DataConfig

    dest, rep = export_file(target, out, DataConfig(name=data, path=data_path) if data else None,
                            trust_code=trust_code)
    typer.echo(f"exported {dest} ({rep['bytes']:,} bytes, sha256 {rep['sha256'][:16]}…, dynamic batch axis)")
    typer.echo(f"ONNX Runtime vs PyTorch on {rep['samples']} test samples: max |Δ logit| {rep['max_abs_diff']:.3g} "
               f"(allowed {rep['atol']:g} + {rep['rtol']:g}·|logit|), top-1 changed on {rep['top1_changed']:.2%} "
               f"(allowed {rep['max_top1_change']:.2%})")
    typer.echo(f"latency b=1 on the CPU: ONNX Runtime {rep['latency_ms']['onnx']:.3f} ms, "
               f"PyTorch {rep['latency_ms']['torch']:.3f} ms")


@app.command()
def serve(
    target: Annotated[Path, typer.Argument(help="a run folder (serves models/student.onnx, else the PyTorch "
                                                "student) or a model file (.onnx or .pt)")],
    host: Annotated[Optional[str], typer.Option(help="address to bind (default 127.0.0.1); another than loopback "
                                                     "exposes the model to the network: set --token")] = None,
    port: Annotated[Optional[int], typer.Option(help="port (default 8000)")] = None,
    token: Annotated[Optional[str], typer.Option(help="require 'Authorization: Bearer TOKEN' on every route but "
                                                      "/health (default: the DISTIL_SERVE_TOKEN environment "
                                                      "variable, which other users cannot read in ps)")] = None,
    max_batch: Annotated[Optional[int], typer.Option(help="most inputs per request and per forward pass "
                                                          "(default 256)")] = None,
    max_wait_ms: Annotated[Optional[float], typer.Option(help="micro-batching: how long a request waits for "
                                                              "others to share its forward pass (default 2; 0: "
                                                              "off)")] = None,
    queue: Annotated[Optional[int], typer.Option(help="most requests waiting for inference; more get 503 "
                                                      "(default 256)")] = None,
    max_body_bytes: Annotated[Optional[int], typer.Option(help="largest body in bytes (default 4000000)")] = None,
    body_timeout_s: Annotated[Optional[float], typer.Option(help="seconds a request body may take to arrive "
                                                                 "(default 10)")] = None,
    backend: Annotated[str, typer.Option(help="auto, onnx or torch")] = "auto",
) -> None:
    """Serve a model over HTTP: POST /predict, GET /metadata, GET /health (defaults from the run's serve section)."""
    for module in ("fastapi", "uvicorn"):
        require(module, "serve", "distil serve")
    from distil.serve import serve as run_server  # optional: fastapi, uvicorn (distil[serve])

    run_server(target, backend=backend, host=host, token=token, port=port, max_batch=max_batch,
               max_wait_ms=max_wait_ms, queue=queue, max_body_bytes=max_body_bytes, body_timeout_s=body_timeout_s)


def main() -> None:
    """Entry point: user errors print one line to stderr and exit 2, without a traceback."""
    try:
        app()  # standalone: usage errors print their message and exit 2
    except DistilError as exc:
        print(f"distil: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
