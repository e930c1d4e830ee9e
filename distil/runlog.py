"""metrics.jsonl: one JSON line per epoch and stage, appended as training goes."""

from __future__ import annotations

import json
from pathlib import Path

from distil.checkpoint import atomic_write_text


class MetricsLog:
    """Append-only JSON-lines log of a run; `rewind` drops lines a resumed stage will write again."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        """Append one record as a line."""
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=False) + "\n")

    def records(self) -> list[dict]:
        """Every complete record written so far (a torn last line from a crash is skipped)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def rewind(self, stage: str, epoch: int) -> None:
        """Keep only `stage`'s records up to `epoch` (and every other stage's), rewriting the file atomically."""
        kept = [r for r in self.records() if r.get("stage") != stage or r.get("epoch", 0) <= epoch]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def drop_stage(self, stage: str) -> None:
        """Forget every record of `stage` (it is about to be rerun from scratch)."""
        self.rewind(stage, 0)
