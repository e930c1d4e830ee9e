"""`csv` tables with a schema in the recipe (`tabular.columns`): header row, one row per sample, empty = missing."""

from __future__ import annotations

import csv
from pathlib import Path

from distil.errors import DistilError, nearest
from distil.tabular.config import SchemaConfig
from distil.tabular.table import Table


def read_csv_table(path: str | Path, schema: SchemaConfig) -> Table:
    """The CSV at `path` as a Table; DistilError for a missing file, ragged rows or a schema column it lacks."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DistilError(f"tabular.path: file {path} does not exist; set tabular.path to the CSV file.")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            rows = [row for row in csv.reader(f) if row]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DistilError(f"tabular.path: {path} cannot be read as UTF-8 CSV ({exc}); save it as UTF-8 CSV.") \
            from None
    if len(rows) < 2:
        raise DistilError(f"tabular.path: {path} has no data rows; give a header row and one row per sample.")
    header = [h.strip() for h in rows[0]]
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise DistilError(f"tabular.path: {path} line {line} has {len(row)} fields but the header has "
                              f"{len(header)}; fix that row (quote values that contain commas).")
    wanted = [schema.label, *schema.categorical, *schema.numeric, *schema.multi_valued]
    if schema.group:
        wanted.append(schema.group)
    for col in wanted:
        if col not in header:
            raise DistilError(f"tabular.columns: column '{col}' is not in {path}{nearest(col, header)}; its columns "
                              f"are {', '.join(header)}.")
    at = {name: i for i, name in enumerate(header)}
    columns = {col: [row[at[col]].strip() for row in rows[1:]] for col in dict.fromkeys(wanted)}
    return Table(columns, schema, str(path))
