"""The "records" preprocessing kind: `distil serve` / `distil eval` of a tabular model file take raw records
(`{"records": [{"user_id": "12", "gender": "F", "genres": ["Drama"], ...}]}`) and apply the run's encoders, which
the model file carries in its metadata."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from distil.errors import DistilError
from distil.preprocess import InputError, Preprocessor, register_kind
from distil.tabular.encoders import Encoders, Field, encode_records, is_missing

KINDS = {"categorical": "a string (or an integer) from the training vocabulary; unseen values map to the "
                        "out-of-vocabulary slot",
         "numeric": "a number; null when unknown",
         "multi_valued": "a list of strings (e.g. [\"Drama\", \"Comedy\"]); [] or null when none"}


def records_spec(encoders: Encoders, example: dict, teacher: bool) -> dict:
    """The preprocess spec a tabular model file carries: its encoders, whether it takes the teacher-only fields,
    and one raw training record as the example."""
    return {"kind": "records", "encoders": encoders.to_dict(), "teacher": teacher, "example": example}


def raw_record(columns: dict, row: int, fields: list[Field], separator: str) -> dict:
    """Row `row` of a table's raw columns as a JSON-able record of `fields` (what a client would send)."""
    out: dict[str, Any] = {}
    for f in fields:
        value = columns[f.name][row]
        if f.kind == "multi_valued":
            out[f.name] = [] if is_missing(value) else list(value) if isinstance(value, (list, tuple)) else \
                [v for v in str(value).split(separator) if v]
        elif is_missing(value):
            out[f.name] = None
        elif f.kind == "numeric":
            number = float(value)
            out[f.name] = int(number) if number.is_integer() else number
        else:
            out[f.name] = str(value)
    return out


def check_types(records: list, fields: list[Field]) -> None:
    """InputError naming the record and field whose value has the wrong JSON type for its kind."""
    for i, record in enumerate(records):
        if not isinstance(record, dict):
            raise InputError(f"records[{i}] is a {type(record).__name__}; a record is an object of field: value.")
        for f in fields:
            if f.name not in record:
                continue  # encode_records names missing fields
            value, where = record[f.name], f"records[{i}].{f.name}"
            if value is None:
                continue
            if f.kind == "numeric":
                ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
            elif f.kind == "categorical":
                ok = isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))
            else:
                ok = isinstance(value, list) and all(isinstance(v, str) for v in value)
            if not ok:
                raise InputError(f"{where}: {json_type(value)} is the wrong type; a {f.kind} field takes "
                                 f"{KINDS[f.kind]}.")


def json_type(value: Any) -> str:
    """The JSON name of a value's type, for messages."""
    names = {bool: "true/false", int: "a number", float: "a number", str: "a string", list: "an array",
             dict: "an object"}
    return names.get(type(value), type(value).__name__)


@register_kind("records")
class Records(Preprocessor):
    """Raw records of field: value, encoded with the model file's encoders (vocabularies, training statistics)."""

    field = "records"

    def __init__(self, spec: dict, input_shape: tuple[int, ...]) -> None:
        super().__init__(spec, input_shape)
        try:
            self.encoders = Encoders.from_json(spec["encoders"])
        except (KeyError, TypeError, ValueError):
            raise DistilError("model file: its 'records' preprocessing lacks intact encoders; use an intact model "
                              "file from a tabular run folder.") from None
        self.teacher = bool(spec.get("teacher", False))
        self.fields = self.encoders.fields if self.teacher else self.encoders.student_fields()

    def describe(self) -> dict:
        """Each field a record needs: its kind, what it takes and (categorical) how many values it knows."""
        fields = []
        for f in self.fields:
            entry: dict[str, Any] = {"name": f.name, "kind": f.kind, "takes": KINDS[f.kind]}
            if f.vocab:
                entry["known_values"] = len(f.vocab)
                entry["some_values"] = list(f.vocab)[:10]
            if f.buckets:
                entry["hashed_into"] = f.buckets
            fields.append(entry)
        return {"kind": self.kind, "fields": fields, "task": self.encoders.task,
                "preprocessing": "send raw records with every field above (null when unknown) and no other; the "
                                 "server applies the run's encoders (vocabularies, training means and deviations)"}

    def example(self) -> Any:
        """A raw training record (the one the run recorded)."""
        return self.spec.get("example") or {f.name: None for f in self.fields}

    def encode(self, items: list) -> np.ndarray:
        """Encoded float32 rows of raw records; InputError naming the field that is unknown, missing or mistyped."""
        check_types(items, self.fields)
        try:
            return encode_records(items, self.encoders, teacher=self.teacher).numpy()
        except DistilError as exc:
            raise InputError(str(exc)) from None
