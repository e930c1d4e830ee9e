"""`csv`: a table with a header row; `data.label_column` holds the class, every other column is a numeric feature."""

from __future__ import annotations

import csv

import numpy as np

from distil.data.registry import Arrays, encode_labels, register, require_file
from distil.errors import DistilError
from distil.recipe import DataConfig


@register("csv")
def csv_table(cfg: DataConfig) -> Arrays:
    """The CSV at `data.path`: features as x shaped (F,), labels (ints or strings) mapped to 0..K-1 in sorted order."""
    path = require_file(cfg)
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DistilError(f"data.path: {path} cannot be read as UTF-8 CSV ({exc}); save it as UTF-8 CSV.") from None
    rows = [row for row in rows if row]
    if len(rows) < 2:
        raise DistilError(f"data.path: {path} has no data rows; give a header row and one row per sample.")
    header, body = [name.strip() for name in rows[0]], rows[1:]
    if cfg.label_column not in header:
        raise DistilError(
            f"data.label_column: column '{cfg.label_column}' is not in {path}; its columns are {', '.join(header)}."
        )
    for line, row in enumerate(body, start=2):
        if len(row) != len(header):
            raise DistilError(f"data.path: {path} line {line} has {len(row)} fields, the header {len(header)}; fix it.")
    label_at = header.index(cfg.label_column)
    features = [i for i in range(len(header)) if i != label_at]
    if not features:
        raise DistilError(f"data.path: {path} has no feature columns besides '{cfg.label_column}'; add some.")
    x = np.empty((len(body), len(features)), dtype=np.float32)
    for j, col in enumerate(features):
        try:
            x[:, j] = [float(row[col]) for row in body]
        except ValueError:
            line, bad = next((n, row[col]) for n, row in enumerate(body, start=2) if not _is_number(row[col]))
            raise DistilError(
                f"data.path: column '{header[col]}' of {path} is not numeric (line {line}: {bad!r}); "
                "encode it as numbers or drop it."
            ) from None
    y, class_names = encode_labels(np.array([row[label_at].strip() for row in body]), f"data.path: {path}")
    return Arrays(x=x, y=y, class_names=class_names)


def _is_number(text: str) -> bool:
    """Whether float() accepts `text`."""
    try:
        float(text)
    except ValueError:
        return False
    return True
