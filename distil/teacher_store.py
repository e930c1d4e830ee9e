"""Trained teachers kept by fingerprint (`<runs>/.teachers/<fingerprint>.pt`), so that repeated runs, seeds and
sweep trials with the same teacher, data, loop settings and seed train it once."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch

from distil import checkpoint
from distil.errors import DistilError
from distil.recipe import Recipe

log = logging.getLogger("distil")
STORE = ".teachers"
FORMAT = 1  # bump when what a stored teacher means changes


def teacher_fingerprint(recipe: Recipe, train: object) -> str:
    """SHA-256 of everything that shapes a teacher trained on the labels: its architecture and epochs, the data
    section and the training inputs and labels, the loop settings, the seed and the store format."""
    settings = {"teacher": recipe.teacher.model_dump(mode="json", exclude={"checkpoint"}),
                "data": recipe.data.model_dump(mode="json"), "train": recipe.train.model_dump(mode="json"),
                "seed": recipe.seed, "format": FORMAT}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for name in ("x", "y"):
        tensor = getattr(train, name, None)
        if isinstance(tensor, torch.Tensor):
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


class TeacherStore:
    """A folder of teacher model files named by fingerprint; each is written by temp file + rename."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def path(self, fingerprint: str) -> Path:
        """Where the teacher of `fingerprint` is kept."""
        return self.folder / f"{fingerprint[:32]}.pt"

    def get(self, fingerprint: str) -> Path | None:
        """The stored teacher file of `fingerprint` when one is there and intact; None otherwise."""
        path = self.path(fingerprint)
        if not path.is_file():
            return None
        try:
            checkpoint.verify(path)
        except DistilError:  # a damaged store entry is trained again, never trusted
            log.warning("distil: teacher store entry %s is damaged; training the teacher again", path)
            return None
        return path

    def put(self, fingerprint: str, model_file: Path) -> Path:
        """Keep a copy of a run's finished teacher file under its fingerprint."""
        path = self.path(fingerprint)
        checkpoint.atomic_write_bytes(path, Path(model_file).read_bytes())
        return path
