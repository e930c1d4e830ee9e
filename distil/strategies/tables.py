"""What a strategy adds to a run's results and report: labels for its models and its own tables.

results.json gets `strategy: {name, data, tables}` (`data`: the raw numbers, `tables`: titled rows of formatted
cells); report.md shows the tables under "Strategy".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from torch import nn


@dataclass
class Outcome:
    """The models a strategy trained (evaluated like any run's), their labels, its teacher and its extra results."""

    name: str
    teacher: nn.Module | None
    models: dict[str, nn.Module]
    labels: dict[str, str] = field(default_factory=dict)
    data: dict = field(default_factory=dict)
    tables: list[dict] = field(default_factory=list)
    derive: Callable[[dict], list[dict]] | None = None  # tables made from the evaluated results
    report: bool = True  # False: nothing to add to the report (offline, the plain run)

    def annotate(self, results: dict) -> None:
        """Label the evaluated models and add the strategy's numbers and tables to `results`."""
        if not self.report:
            return
        for role, label in self.labels.items():
            if role in results.get("models", {}):
                results["models"][role]["label"] = label
        tables = self.tables + (self.derive(results) if self.derive is not None else [])
        results["strategy"] = {"name": self.name, "data": self.data, "tables": tables}


def table(title: str, columns: list[str], rows: list[list[str]], note: str = "") -> dict:
    """One titled table of formatted cells (and an optional note under it)."""
    return {"title": title, "columns": columns, "rows": rows, "note": note}


def pct(value: float | None) -> str:
    """A share as a percentage with two decimals ('-' when missing)."""
    return "-" if value is None else f"{100 * value:.2f}%"


def render_strategy(results: dict) -> list[str]:
    """report.md lines for the strategy's tables (none for an offline run)."""
    strategy = results.get("strategy")
    if not strategy or not strategy.get("tables"):
        return []
    lines = [f"## Strategy: {strategy['name']}", ""]
    for t in strategy["tables"]:
        lines += [f"### {t['title']}", "", "| " + " | ".join(t["columns"]) + " |",
                  "|" + "|".join(["---"] + ["---:"] * (len(t["columns"]) - 1)) + "|"]
        lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in t["rows"]]
        lines += ["", *([t["note"], ""] if t["note"] else [])]
    return lines
