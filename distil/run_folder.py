"""A run's folder: created for a new run, kept for --resume (with the same recipe), emptied for --overwrite."""

from __future__ import annotations

import shutil
from pathlib import Path

from distil import checkpoint, distributed
from distil.errors import DistilError
from distil.recipe import Recipe, dump_recipe


def prepare_run_folder(folder: Path, recipe: Recipe, *, resume: bool, overwrite: bool) -> None:
    """Check `folder` may hold this run, then write the resolved recipe into it as recipe.yaml."""
    saved = folder / "recipe.yaml"
    text = dump_recipe(recipe)
    if folder.exists() and any(folder.iterdir()):
        if overwrite and distributed.is_main():
            shutil.rmtree(folder)
        elif not resume and not overwrite:
            raise DistilError(f"run folder {folder} already exists; pass --resume to continue it, --overwrite "
                              "to start again, or --set name=... for a new run.")
        elif resume and saved.is_file() and saved.read_text(encoding="utf-8") != text:
            raise DistilError(f"--resume: the recipe differs from {saved}; resume with the same recipe and "
                              "overrides, or start a new run with --set name=....")
    distributed.barrier()  # every rank has looked at the folder before rank 0 writes into it
    checkpoint.atomic_write_text(saved, text)
