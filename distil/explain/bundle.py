"""The explain stage's saved students (`explain/students.npz`): JSON settings and measurements plus numpy arrays,
in one .npz archive read with allow_pickle=False, so opening a bundle never runs code."""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from distil.checkpoint import write_atomically
from distil.errors import DistilError
from distil.explain.linear import LinearStudent
from distil.explain.rules import RuleListStudent
from distil.explain.soft_tree import SoftTreeStudent
from distil.explain.students import Names, Transparent
from distil.explain.tree import TreeStudent

BUNDLE = "students.npz"
OLD_BUNDLE = "students.pkl"  # written by earlier versions as a pickle, which is never opened
BUNDLE_FORMAT = "distil-explain-2"
HEADER = "__header__"  # the archive member holding the JSON text, as bytes
KINDS: dict[str, type] = {"tree": TreeStudent, "rules": RuleListStudent, "linear": LinearStudent,
                          "soft_tree": SoftTreeStudent}


@dataclass
class Explained:
    """The fitted students (kind -> variant -> student), their measurements, and what explanations need."""

    students: dict[str, dict[str, Transparent]]
    results: dict
    names: Names
    input_shape: tuple[int, ...]
    teacher_test_predictions: np.ndarray


def _plain(value: object) -> object:
    """json.dumps fallback for numpy scalars and arrays in the measurements."""
    if isinstance(value, np.generic | np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON data")


def save_bundle(path: Path, explained: Explained) -> None:
    """Write the fitted students and their measurements atomically, so `distil explain` needs no refitting."""
    arrays = {"teacher_test_predictions": np.asarray(explained.teacher_test_predictions)}
    students: dict[str, dict[str, dict]] = {}
    for kind, variants in explained.students.items():
        students[kind] = {}
        for variant, student in variants.items():
            info, named = student.data()
            students[kind][variant] = info
            arrays.update({f"{kind}/{variant}/{name}": np.asarray(a) for name, a in named.items()})
    header = {"format": BUNDLE_FORMAT, "results": explained.results, "students": students,
              "names": {"features": explained.names.features, "classes": explained.names.classes},
              "input_shape": list(explained.input_shape)}
    text = json.dumps(header, default=_plain).encode("utf-8")
    write_atomically(path, lambda f: np.savez(f, **{HEADER: np.frombuffer(text, dtype=np.uint8)}, **arrays))


def load_bundle(path: Path) -> Explained:
    """The Explained a run's explain stage saved, or DistilError when it is missing, damaged or not data only."""
    path = Path(path)
    if not path.is_file():
        if path.with_name(OLD_BUNDLE).is_file():
            raise DistilError(f"{path.with_name(OLD_BUNDLE)} was written by an older distil as a pickle, which distil "
                              "no longer opens (it could run code); rerun the recipe with --overwrite to rebuild it.")
        raise DistilError(f"{path} does not exist; run a recipe with an `explain:` section first "
                          "(distil run RECIPE), then explain its run folder.")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
        header = json.loads(arrays.pop(HEADER).tobytes().decode("utf-8"))
        if header.get("format") != BUNDLE_FORMAT:
            raise ValueError("unknown format")
        students = {kind: {variant: KINDS[kind].from_data(info, _under(arrays, f"{kind}/{variant}/"))
                           for variant, info in variants.items()}
                    for kind, variants in header["students"].items()}
        return Explained(students, header["results"], Names(header["names"]["features"], header["names"]["classes"]),
                         tuple(header["input_shape"]), arrays["teacher_test_predictions"])
    except (ValueError, KeyError, TypeError, AttributeError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise DistilError(f"{path} is not an intact distil explain file ({type(exc).__name__}); rerun the recipe "
                          "with --overwrite to rebuild it.") from None


def _under(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    return {name.removeprefix(prefix): a for name, a in arrays.items() if name.startswith(prefix)}
