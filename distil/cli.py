"""The `distil` command: run, methods, models, eval, report."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from distil.errors import DistilError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Distill a large teacher into a small, fast student and compare them side by side.")


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
) -> None:
    """Train the teacher, distill the student, train the student alone, evaluate all three and write the report."""
    from distil.pipeline import run_recipe
    from distil.recipe import load_recipe
    from distil.report import gains, render_gains, render_text

    loaded = load_recipe(recipe, set_)
    result = run_recipe(loaded, runs_dir, resume=resume, overwrite=overwrite, quiet=quiet)
    say(render_text(result.results), quiet)
    say("\n".join(render_gains(gains(result.results))), quiet)
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
    run_ = Run(loaded, runs_dir, resume=True, quiet=quiet)
    teacher_cache = run_.cache(run_.teach())
    layout = teacher_cache.layout
    say(f"cache: {teacher_cache.folder} ({layout.samples} samples x {layout.views} views, {layout.dtype}"
        f"{f', top-{layout.topk}' if layout.topk else ''}, {len(layout.arrays)} arrays)", quiet)


@app.command()
def methods() -> None:
    """List the registered distillation losses with their parameters and paper."""
    from distil.methods import describe_methods

    for row in describe_methods():
        params = ", ".join(f"{k}={v['default']}" for k, v in row["params"].items()) or "-"
        typer.echo(f"{row['name']:<12} {row['summary']}")
        typer.echo(f"{'':<12} params: {params}")
        typer.echo(f"{'':<12} paper: {row['paper']}")


@app.command()
def models() -> None:
    """List the model zoo (plus python:pkg.mod:factory and checkpoint:path)."""
    from distil.models import available_models

    typer.echo("\n".join(available_models()))
    typer.echo("python:package.module:factory   a user model factory(input_shape=..., num_classes=...)")
    typer.echo("checkpoint:path/to/model.pt     a model saved by distil")


@app.command("eval")
def evaluate(
    model_file: Annotated[Path, typer.Argument(help="a model file, e.g. runs/<name>/models/student.pt")],
    data: Annotated[str, typer.Option(help="dataset name (digits, mnist1d, fashion_mnist, synthetic, npz, csv)")],
    data_path: Annotated[Optional[str], typer.Option(help="file or folder for npz / csv / fashion_mnist")] = None,
    split: Annotated[str, typer.Option(help="train, val or test")] = "test",
    device: Annotated[str, typer.Option(help="auto, cpu or cuda")] = "auto",
) -> None:
    """Evaluate a saved model on a dataset split: accuracy, F1, calibration, size and latency."""
    from distil.checkpoint import load_model
    from distil.data import load_dataset
    from distil.engine import predict, resolve_device, targets_of
    from distil.metrics import classification_metrics
    from distil.profile import profile_model
    from distil.recipe import DataConfig
    from distil.report import render_text

    if split not in {"train", "val", "test"}:
        raise DistilError(f"--split: '{split}' is not a split; use train, val or test.")
    model, meta = load_model(model_file)
    splits = load_dataset(DataConfig(name=data, path=data_path))
    if tuple(meta["input_shape"]) != tuple(splits.input_shape) or meta["num_classes"] != splits.num_classes:
        raise DistilError(f"{model_file} expects inputs {tuple(meta['input_shape'])} with {meta['num_classes']} "
                          f"classes but --data {data} has {tuple(splits.input_shape)} with {splits.num_classes}; "
                          "evaluate it on the data it was trained on.")
    dataset = getattr(splits, split)
    run_device = resolve_device(device)
    model = model.to(run_device)
    metrics = classification_metrics(predict(model, dataset, run_device), targets_of(dataset), splits.num_classes)
    metrics.update(profile_model(model, splits.input_shape, run_device))
    typer.echo(render_text({"models": {"model": {"label": model_file.name, **metrics}}}))


@app.command()
def report(run_dir: Annotated[Path, typer.Argument(help="a run folder, e.g. runs/digits-kd")]) -> None:
    """Re-render report.md of a finished run from its results.json and print the table."""
    from distil.report import load_results, render_text, write_report

    results = load_results(run_dir)
    path = write_report(run_dir, results)
    typer.echo(render_text(results))
    typer.echo(f"report: {path}")


def main() -> None:
    """Entry point: user errors print one line to stderr and exit 2, without a traceback."""
    try:
        app()  # standalone: usage errors print their message and exit 2
    except DistilError as exc:
        print(f"distil: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
