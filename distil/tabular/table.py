"""A table as read: raw values by column, the schema that says what each column is, and optional row times."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from distil.tabular.config import SchemaConfig


@dataclass
class Table:
    """Raw column values (strings, numbers, None, or lists for multi-valued cells), the schema and where it is from."""

    columns: dict[str, Sequence]
    schema: SchemaConfig
    source: str
    time: np.ndarray | None = None  # one timestamp per row, for a split by time

    @property
    def rows(self) -> int:
        """Number of rows."""
        return len(self.columns[self.schema.label])
