"""Opt-in experiment trackers fed by the run log: TensorBoard event files, MLflow (a local SQLite store) and
Weights & Biases (offline by default).

`metrics.jsonl` is always written; a recipe's `track: {tensorboard: true, mlflow: true, wandb: true}` also sends
every record to these. Epoch records become scalars `<stage>/<metric>` at step = epoch; evaluation records become
`evaluate/<model>/<metric>`. MLflow 3 refuses its old file store by default, so runs go to
`runs/<name>/mlflow.db` (open it with `mlflow ui --backend-store-uri sqlite:///runs/<name>/mlflow.db`).
W&B writes its run to `runs/<name>/wandb/` without a network unless WANDB_MODE=online is set (the charter: no
network at run time); `wandb sync runs/<name>/wandb/offline-run-*` uploads it later.
"""

from __future__ import annotations

import logging
import math
import os
import secrets
import time
from pathlib import Path
from typing import Protocol

from distil.checkpoint import atomic_write_text
from distil.extras import require
from distil.recipe import TrackConfig

SKIP = {"stage", "epoch", "model", "label"}


class Tracker(Protocol):
    """Anything that receives the run log's records."""

    def log(self, record: dict) -> None:
        """Send one record (an epoch of a stage, or one model's evaluation)."""
        ...

    def close(self) -> None:
        """Flush and finish."""
        ...


def scalars(record: dict) -> tuple[str, int, dict[str, float]]:
    """(prefix, step, {name: value}) of the finite numeric fields of a record."""
    if "model" in record:
        prefix, step = f"{record.get('stage', 'evaluate')}/{record['model']}", 0
    else:
        prefix, step = str(record.get("stage", "run")), int(record.get("epoch", 0))
    values = {k: float(v) for k, v in record.items()
              if k not in SKIP and isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)}
    return prefix, step, values


class TensorBoardTracker:
    """Writes TensorBoard event files under `<run>/tensorboard/`."""

    def __init__(self, folder: Path) -> None:
        require("tensorboard", "track", "track.tensorboard")
        from torch.utils.tensorboard import SummaryWriter  # optional: tensorboard (distil[track])

        self.writer = SummaryWriter(log_dir=str(folder))

    def log(self, record: dict) -> None:
        """One scalar per numeric field."""
        prefix, step, values = scalars(record)
        for name, value in values.items():
            self.writer.add_scalar(f"{prefix}/{name}", value, step)
        self.writer.flush()

    def close(self) -> None:
        """Close the event file."""
        self.writer.close()


class MLflowTracker:
    """Logs params (the flattened recipe) and metrics to an MLflow run in `<run>/mlflow.db`; resumes the same run."""

    def __init__(self, run_dir: Path, name: str, params: dict[str, str]) -> None:
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("alembic").setLevel(logging.WARNING)
        require("mlflow", "track", "track.mlflow")
        from mlflow.entities import Param  # optional: mlflow-skinny (distil[track])
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=f"sqlite:///{Path(run_dir).resolve() / 'mlflow.db'}")
        experiment = self.client.get_experiment_by_name("distil")
        experiment_id = experiment.experiment_id if experiment else self.client.create_experiment(
            "distil", artifact_location=(Path(run_dir).resolve() / "mlflow-artifacts").as_uri())
        id_file = Path(run_dir) / "mlflow_run_id"
        self.run_id = id_file.read_text(encoding="utf-8").strip() if id_file.is_file() else ""
        if not self.run_id:
            self.run_id = self.client.create_run(experiment_id, run_name=name).info.run_id
            atomic_write_text(id_file, self.run_id)
            items = [Param(k[:250], v[:6000]) for k, v in params.items()]
            for start in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=items[start:start + 100])

    def log(self, record: dict) -> None:
        """One metric per numeric field, at step = epoch."""
        from mlflow.entities import Metric

        prefix, step, values = scalars(record)
        now = int(time.time() * 1000)
        metrics = [Metric(f"{prefix}/{name}", value, now, step) for name, value in values.items()]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self) -> None:
        """Mark the MLflow run finished."""
        self.client.set_terminated(self.run_id)


class WandbTracker:
    """Logs the flattened recipe as config and every record as metrics to a W&B run in `<run>/wandb/`; a resumed
    run folder continues the same W&B run (its id is kept in `<run>/wandb_run_id`)."""

    def __init__(self, run_dir: Path, name: str, config: dict[str, str]) -> None:
        wandb = require("wandb", "track", "track.wandb")

        id_file = Path(run_dir) / "wandb_run_id"
        run_id = id_file.read_text(encoding="utf-8").strip() if id_file.is_file() else secrets.token_hex(4)
        atomic_write_text(id_file, run_id)
        # W&B writes into a `wandb/` folder of `dir`: runs/<name>/wandb/offline-run-*, what `wandb sync` is given
        self.run = wandb.init(project="distil", name=name, id=run_id, resume="allow", dir=str(run_dir),
                              config=config, mode=os.environ.get("WANDB_MODE", "offline"),
                              settings=wandb.Settings(silent=True, console="off", x_disable_stats=True))

    def log(self, record: dict) -> None:
        """One metric per numeric field; the stage's epoch (or 0 for an evaluation) rides along as `<prefix>/epoch`."""
        prefix, step, values = scalars(record)
        if values:
            self.run.log({f"{prefix}/{name}": value for name, value in values.items()} | {f"{prefix}/epoch": step})

    def close(self) -> None:
        """Finish the W&B run (an offline one is complete on disk)."""
        self.run.finish()


def flatten(tree: object, prefix: str = "") -> dict[str, str]:
    """{"train.lr": "0.01", "distill.losses.1.temperature": "4.0", ...} of a nested mapping."""
    if isinstance(tree, dict):
        items = tree.items()
    elif isinstance(tree, list):
        items = ((str(i), v) for i, v in enumerate(tree))
    else:
        return {prefix: str(tree)}
    out: dict[str, str] = {}
    for key, value in items:
        out.update(flatten(value, f"{prefix}.{key}" if prefix else str(key)))
    return out


def open_trackers(cfg: TrackConfig, run_dir: Path, name: str, recipe: dict) -> list[Tracker]:
    """The trackers a recipe's `track` section asks for (none by default)."""
    trackers: list[Tracker] = []
    if cfg.tensorboard:
        trackers.append(TensorBoardTracker(Path(run_dir) / "tensorboard"))
    if cfg.mlflow:
        trackers.append(MLflowTracker(Path(run_dir), name, flatten(recipe)))
    if cfg.wandb:
        trackers.append(WandbTracker(Path(run_dir), name, flatten(recipe)))
    return trackers
