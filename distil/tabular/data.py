"""A tabular run's data: the table read, split (seeded, at random or by time), encoded with training statistics."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from distil.data import IndexedTensorDataset
from distil.errors import DistilError
from distil.recipe import DataConfig
from distil.tabular.config import TabularConfig
from distil.tabular.csv_table import read_csv_table
from distil.tabular.encoders import Encoders, encode_columns, fit_encoders, is_missing
from distil.tabular.movielens import movielens_100k
from distil.tabular.records import raw_record
from distil.tabular.table import Table


@dataclass
class TabularSplits:
    """Encoded train / val / test splits (teacher-width rows), the encoders and the test rows' groups (for gAUC)."""

    name: str
    train: IndexedTensorDataset
    val: IndexedTensorDataset
    test: IndexedTensorDataset
    encoders: Encoders
    test_groups: np.ndarray | None
    split: str
    positive_rate: float | None
    example: dict  # the first training row as a raw record of every field (the serving example)

    @property
    def num_classes(self) -> int:
        """Model outputs: 2 for binary (the logits [0, z]), K for multiclass, 1 for regression."""
        return {"binary": 2, "regression": 1}.get(self.encoders.task, len(self.encoders.class_names))

    @property
    def class_names(self) -> list[str]:
        """The classes (binary, multiclass) or the target's name (regression)."""
        return self.encoders.class_names


def read_table(cfg: TabularConfig, limit: int | None) -> Table:
    """The table the recipe names."""
    if cfg.dataset == "movielens_100k":
        return movielens_100k(privileged=cfg.privileged, limit=limit)
    table = read_csv_table(cfg.path, cfg.columns)
    if limit is not None:
        table.columns = {k: v[:limit] for k, v in table.columns.items()}
    return table


def split_rows(rows: int, data: DataConfig, time: np.ndarray | None, by: str) -> tuple[np.ndarray, ...]:
    """Row indices of train, val and test: a seeded permutation, or (by time) the latest rows last."""
    if by == "time":
        if time is None:
            raise DistilError("tabular.split: time needs a timestamp per row; this table has none, use random.")
        order = np.argsort(time, kind="stable")
    else:
        order = np.random.default_rng(data.split_seed).permutation(rows)
    n_test = max(1, int(round(rows * data.test_fraction)))
    n_val = int(round(rows * data.val_fraction))
    if rows - n_test - n_val < 2:
        raise DistilError(f"data: {rows} rows leave no training rows; use more rows or smaller split fractions.")
    train, val, test = order[:rows - n_test - n_val], order[rows - n_test - n_val:rows - n_test], order[rows - n_test:]
    return np.sort(train), np.sort(val), np.sort(test)


def encode_labels(table: Table, train: np.ndarray) -> tuple[np.ndarray, list[str], float, float]:
    """Labels as class codes (binary, multiclass) or standardised floats (regression), with the class names."""
    schema, raw = table.schema, table.columns[table.schema.label]
    where = f"{table.source}: label '{schema.label}'"
    missing = [i for i, v in enumerate(raw) if is_missing(v)]
    if missing:
        raise DistilError(f"{where} is missing in row {missing[0] + 1}; every row needs a label.")
    if schema.task == "regression":
        try:
            y = np.array([float(v) for v in raw], dtype=np.float64)
        except ValueError:
            raise DistilError(f"{where}: task regression needs numeric labels; fix the column or the task.") from None
        mean, std = float(y[train].mean()), float(y[train].std()) or 1.0
        return ((y - mean) / std).astype(np.float32), [schema.label], mean, std
    values = sorted({str(v) for v in raw}, key=lambda v: (float(v), v) if _numeric(v) else (np.inf, v))
    declared = 2 if schema.task == "binary" else schema.classes
    if len(values) > declared:
        raise DistilError(f"{where} has {len(values)} distinct values ({', '.join(values[:6])}) but task "
                          f"{schema.task} declares {declared} classes; fix the labels or set columns.task / classes.")
    if len(values) < 2:
        raise DistilError(f"{where} has only the value {values[0]!r}; a classifier needs two classes at least.")
    code = {v: i for i, v in enumerate(values)}
    names = values + [f"class_{i}" for i in range(len(values), declared)]
    return np.array([code[str(v)] for v in raw], dtype=np.int64), names, 0.0, 1.0


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_tabular(cfg: TabularConfig, data: DataConfig) -> TabularSplits:
    """Read, split and encode the table of a recipe's `tabular` and `data` sections."""
    table = read_table(cfg, data.limit)
    split = cfg.split if cfg.dataset == "movielens_100k" else "random"
    train, val, test = split_rows(table.rows, data, table.time, split)
    y, names, mean, std = encode_labels(table, train)
    encoders = fit_encoders(table.columns, table.schema, train, names, table.source)
    encoders.target_mean, encoders.target_std = mean, std
    x = encode_columns(table.columns, encoders, table.rows)
    target = torch.from_numpy(y)
    group = table.schema.group
    groups = np.array([str(table.columns[group][i]) for i in test]) if group else None
    positive = float(y.mean()) if table.schema.task == "binary" else None

    def part(rows: np.ndarray) -> IndexedTensorDataset:
        index = torch.from_numpy(rows)
        return IndexedTensorDataset(x[index].contiguous(), target[index].contiguous())

    example = raw_record(table.columns, int(train[0]), encoders.fields, encoders.separator)
    return TabularSplits(table.source, part(train), part(val), part(test), encoders, groups, split, positive,
                         example)
