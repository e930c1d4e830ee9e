"""Encoders fitted on the training rows, saved as JSON with the run: raw records -> one float tensor per row.

The encoded row is the concatenation, in field order, of: a categorical field's code (0 = out of vocabulary),
a numeric field's standardised value (missing -> 0, the training mean) and, when training had missing values, its
missing flag, and a multi-valued field's `width` codes (0 = padding, 1 = out of vocabulary). Teacher-only fields come
last, so a student's input is a prefix of the teacher's. Codes are exact in float32 (below 2**24).
"""

from __future__ import annotations

import json
import math
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from distil.errors import DistilError
from distil.tabular.config import SchemaConfig

MAX_BAG = 16  # values a multi-valued cell keeps (the first ones)
MAX_CODE = 2**24  # float32 holds every integer below this exactly


@dataclass
class Field:
    """One encoded field: its kind, where its columns start in the row, how many it has and its vocabulary."""

    name: str
    kind: str  # "categorical" | "numeric" | "multi_valued"
    offset: int
    width: int
    size: int = 0  # categorical / multi-valued: embedding rows (codes are < size)
    vocab: dict[str, int] = field(default_factory=dict)
    buckets: int = 0  # categorical: hashed into this many buckets instead of the vocabulary
    mean: float = 0.0
    std: float = 1.0
    missing_flag: bool = False
    teacher_only: bool = False


@dataclass
class Encoders:
    """Every field's encoder, the label's (class names or the regression target's scale) and the task."""

    fields: list[Field]
    task: str
    class_names: list[str]
    label: str
    separator: str = "|"
    target_mean: float = 0.0  # regression: the model predicts (y - target_mean) / target_std
    target_std: float = 1.0

    def width(self, teacher: bool = True) -> int:
        """Columns of an encoded row: every field's (teacher), or the serving-time fields' only (student)."""
        return sum(f.width for f in self.fields if teacher or not f.teacher_only)

    def student_fields(self) -> list[Field]:
        """The fields a student (and serving) sees: all but the teacher-only ones."""
        return [f for f in self.fields if not f.teacher_only]

    def to_dict(self) -> dict:
        """The encoders as plain JSON data (in the model files' metadata)."""
        return asdict(self)

    def to_json(self) -> str:
        """The encoders as JSON text (encoders.json of the run)."""
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | dict) -> Encoders:
        """Encoders from `to_json`'s text (or its parsed dict)."""
        raw = json.loads(text) if isinstance(text, str) else dict(text)
        raw["fields"] = [Field(**f) for f in raw["fields"]]
        return cls(**raw)


def is_missing(value: Any) -> bool:
    """None, NaN and empty / NA strings count as missing."""
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    return isinstance(value, str) and value.strip().lower() in {"", "na", "nan", "null", "none", "?"}


def _bag(value: Any, separator: str) -> list[str]:
    if is_missing(value):
        return []
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value]
    return [v for v in str(value).split(separator) if v]


def _number(value: Any, column: str) -> float:
    if is_missing(value):
        return math.nan
    if isinstance(value, bool):
        raise DistilError(f"field '{column}': {value!r} is not a number; give a number or leave it missing.")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DistilError(f"field '{column}': {value!r} is not a number; give a number or leave it missing.") \
            from None


def _code_of(value: str, buckets: int) -> int:
    return 1 + zlib.crc32(value.encode("utf-8")) % buckets  # stable across processes, unlike hash()


def fit_encoders(columns: dict[str, Sequence], schema: SchemaConfig, train: np.ndarray, class_names: list[str],
                 source: str) -> Encoders:
    """Fit each field's encoder on the training rows `train` of `columns` (raw values by column name)."""
    fields: list[Field] = []
    order = [(c, "categorical") for c in schema.categorical] + [(c, "numeric") for c in schema.numeric] + \
        [(c, "multi_valued") for c in schema.multi_valued]
    order.sort(key=lambda item: item[0] in schema.teacher_only)  # stable: teacher-only fields last
    offset = 0
    for name, kind in order:
        values = [columns[name][i] for i in train]
        present = [v for v in values if not is_missing(v)]
        if not present:
            raise DistilError(f"{source}: column '{name}' is missing in every training row; drop it from the schema "
                              "or fill it in.")
        f = Field(name, kind, offset, 1, teacher_only=name in schema.teacher_only)
        if kind == "categorical":
            if name in schema.hash_buckets:
                f.buckets = schema.hash_buckets[name]
                f.size = f.buckets + 1
            else:
                counts = Counter(str(v) for v in present)
                kept = sorted(v for v, n in counts.items() if n >= schema.min_count)
                if len(kept) > schema.max_vocab:
                    raise DistilError(
                        f"{source}: categorical column '{name}' has {len(kept)} distinct training values, more than "
                        f"max_vocab {schema.max_vocab}; hash it (columns.hash_buckets: {{{name}: 100000}}) or raise "
                        "columns.max_vocab.")
                f.vocab = {v: i + 1 for i, v in enumerate(kept)}
                f.size = len(kept) + 1
        elif kind == "numeric":
            numbers = np.array([_number(v, name) for v in values], dtype=np.float64)
            finite = numbers[np.isfinite(numbers)]
            f.mean = float(finite.mean())
            f.std = float(finite.std()) or 1.0
            f.missing_flag = bool(len(finite) < len(numbers))
            f.width = 2 if f.missing_flag else 1
        else:
            counts = Counter(v for cell in present for v in _bag(cell, schema.separator))
            kept = sorted(v for v, n in counts.items() if n >= schema.min_count)
            if len(kept) > schema.max_vocab:
                raise DistilError(f"{source}: multi-valued column '{name}' has {len(kept)} distinct values, more "
                                  f"than max_vocab {schema.max_vocab}; raise columns.max_vocab or drop it.")
            f.vocab = {v: i + 2 for i, v in enumerate(kept)}
            f.size = len(kept) + 2
            f.width = min(MAX_BAG, max(len(_bag(cell, schema.separator)) for cell in present))
        if f.size >= MAX_CODE:
            raise DistilError(f"{source}: column '{name}' would need {f.size} embedding rows; use fewer hash buckets.")
        fields.append(f)
        offset += f.width
    return Encoders(fields, schema.task, class_names, schema.label, schema.separator)


def encode_columns(columns: dict[str, Sequence], encoders: Encoders, rows: int, teacher: bool = True) -> torch.Tensor:
    """Encode `rows` rows given as raw values by column name into a (rows, width) float32 tensor."""
    fields = encoders.fields if teacher else encoders.student_fields()
    out = np.zeros((rows, sum(f.width for f in fields)), dtype=np.float32)
    at = 0
    for f in fields:
        values = columns[f.name]
        if f.kind == "categorical":
            if f.buckets:
                out[:, at] = [0 if is_missing(v) else _code_of(str(v), f.buckets) for v in values]
            else:
                out[:, at] = [0 if is_missing(v) else f.vocab.get(str(v), 0) for v in values]
        elif f.kind == "numeric":
            numbers = np.array([_number(v, f.name) for v in values], dtype=np.float64)
            missing = ~np.isfinite(numbers)
            out[:, at] = np.where(missing, 0.0, (numbers - f.mean) / f.std)
            if f.missing_flag:
                out[:, at + 1] = missing
        else:
            for r, cell in enumerate(values):
                codes = [f.vocab.get(v, 1) for v in _bag(cell, encoders.separator)][:f.width]
                out[r, at:at + len(codes)] = codes
        at += f.width
    return torch.from_numpy(out)


def encode_records(records: list[dict], encoders: Encoders, teacher: bool = False) -> torch.Tensor:
    """Raw records (`{"user_id": 12, "genres": ["Drama"], ...}`) -> the student's (or teacher's) input tensor.

    A record must carry every serving-time field (missing values as null) and nothing else; a value of the wrong
    type (a list for a categorical field, text for a numeric one) raises DistilError naming the field.
    """
    fields = encoders.fields if teacher else encoders.student_fields()
    names = [f.name for f in fields]
    known = set(names)
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise DistilError(f"records[{i}]: a record is an object of field: value, not {type(record).__name__}.")
        unknown = sorted(set(record) - known)
        if unknown:
            raise DistilError(f"records[{i}]: unknown field '{unknown[0]}'; the fields are {', '.join(names)}.")
        absent = [n for n in names if n not in record]
        if absent:
            raise DistilError(f"records[{i}]: field '{absent[0]}' is missing; give it (null when unknown).")
        for f in fields:
            value = record[f.name]
            if f.kind != "multi_valued" and isinstance(value, (list, tuple, dict)):
                raise DistilError(f"records[{i}].{f.name}: a {f.kind} field takes one value, not a "
                                  f"{type(value).__name__}.")
            if f.kind == "multi_valued" and isinstance(value, dict):
                raise DistilError(f"records[{i}].{f.name}: a multi-valued field takes a list of values.")
    columns = {n: [r[n] for r in records] for n in names}
    return encode_columns(columns, encoders, len(records), teacher=teacher)
