"""distil: distill a large teacher into a small, fast student, and show the trade side by side.

Importing distil loads the recipe schema, the loss registry and the recipe checks (the losses and the strategies
register theirs: distil.recipe.add_check), not the strategies, the report or any optional dependency;
docs/architecture.md is the map."""

from distil.errors import DistilError
from distil.methods import CE, KD, Method, MSELogits, Outputs, register
from distil.recipe import Recipe, load_recipe
from distil.strategies import checks as _checks  # noqa: F401  (registers the strategies' recipe checks)

__version__ = "0.1.0"


def __getattr__(name: str):
    """`distill` and `DistillResult` (the Python API of offline distillation), imported on first use."""
    if name in ("distill", "DistillResult"):
        from distil.strategies import offline

        return getattr(offline, name)
    raise AttributeError(f"module 'distil' has no attribute {name!r}")


def run(recipe: str | Recipe | None = None, *, overrides: list[str] | None = None, runs_dir: str = "runs",
        resume: bool = False, overwrite: bool = False, quiet: bool = True):
    """Run a recipe (a path, a Recipe, or None for the built-in default) and return its RunResult."""
    from distil.pipeline import run_recipe

    if not isinstance(recipe, Recipe):
        recipe = load_recipe(recipe, overrides)
    return run_recipe(recipe, runs_dir, resume=resume, overwrite=overwrite, quiet=quiet)


def load(path: str, *, trust_code: bool = False):
    """Load a model file written by distil (runs/<name>/models/*.pt): returns (model, metadata).

    Model files are data; one that names a `python:` factory is rebuilt by importing and running that code, which
    happens only with trust_code=True (dangerous for files you did not write).
    """
    from pathlib import Path

    from distil.checkpoint import load_model

    return load_model(Path(path), trust_code=trust_code)


__all__ = ["CE", "KD", "DistilError", "DistillResult", "MSELogits", "Method", "Outputs", "Recipe", "distill",
           "load", "load_recipe", "register", "run"]
