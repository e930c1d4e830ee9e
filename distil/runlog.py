"""metrics.jsonl: one JSON line per epoch and stage, appended as training goes (and sent to any opt-in tracker)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from distil import distributed
from distil.checkpoint import atomic_write_text
from distil.trackers import Tracker


class MetricsLog:
    """Append-only JSON-lines log of a run; `restore` replaces a resumed stage's lines by its checkpoint's history.

    In a distributed run only rank 0 writes (the metrics it gets are already all-reduced over ranks).
    """

    def __init__(self, path: Path, trackers: Sequence[Tracker] = ()) -> None:
        self.path = Path(path)
        self.trackers = list(trackers)
        if distributed.is_main():
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, record: dict) -> None:
        """Append one record as a line and pass it to the trackers."""
        if not distributed.is_main():
            return
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=False) + "\n")
        for tracker in self.trackers:
            tracker.log(record)

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

    def restore(self, stage: str, history: list[dict]) -> None:
        """Make `stage`'s records exactly `history` (the epochs its checkpoint holds), rewriting the file atomically.

        Lines written after that checkpoint are dropped, and an epoch whose line was lost to a crash between
        saving the checkpoint and appending the line comes back.
        """
        kept = [r for r in self.records() if r.get("stage") != stage] + list(history)
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def rewind(self, stage: str, epoch: int) -> None:
        """Keep only `stage`'s records of epochs up to `epoch` (and every other stage's), rewriting the file
        atomically; the stage's records without an epoch (evaluate's) are dropped too."""
        kept = [r for r in self.records() if r.get("stage") != stage or r.get("epoch", epoch + 1) <= epoch]
        atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def drop_stage(self, stage: str) -> None:
        """Forget every record of `stage` (it is about to be rerun from scratch)."""
        self.rewind(stage, 0)

    def close(self) -> None:
        """Finish every tracker (the JSON-lines file needs nothing)."""
        for tracker in self.trackers:
            tracker.close()
        self.trackers = []
