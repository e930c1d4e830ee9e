"""`distil eval` of a tabular model file: the table it records (its run's dataset, split and seed) read again and
encoded with the file's own encoders, then the task's metrics (AUC, gAUC, log-loss, ECE / accuracy / RMSE)."""

from __future__ import annotations

import torch
from torch import nn

from distil.engine import predict, targets_of
from distil.errors import DistilError
from distil.recipe import DataConfig
from distil.tabular.config import TabularConfig
from distil.tabular.data import load_tabular
from distil.tabular.latency import latencies_ms
from distil.tabular.metrics import task_metrics
from distil.tabular.records import Records
from distil.tabular.report import METRICS


def evaluate_tabular_file(model: nn.Module, meta: dict, name: str, split: str, device: torch.device) -> str:
    """The metrics of a tabular model file on `split` of the table it was trained on, as a short table."""
    records = Records(meta["preprocess"], tuple(meta["input_shape"]))
    try:
        cfg = TabularConfig.model_validate(meta["table"]["tabular"])
        data = DataConfig.model_validate(meta["table"]["data"])
    except (KeyError, TypeError, ValueError):
        raise DistilError(f"{name}: its metadata does not record the table it was trained on; use a model file "
                          "from a tabular run folder.") from None
    previous = torch.get_num_threads()
    if cfg.threads:  # as in the run (its latency is measured on these threads)
        torch.set_num_threads(cfg.threads)
    try:
        return _evaluate(model, records, cfg, data, name, split, device)
    finally:
        torch.set_num_threads(previous)


def _evaluate(model: nn.Module, records: Records, cfg: TabularConfig, data: DataConfig, name: str, split: str,
              device: torch.device) -> str:
    splits = load_tabular(cfg, data)
    if splits.encoders.to_dict() != records.encoders.to_dict():
        raise DistilError(f"{name}: the table {splits.name} no longer encodes as it did in training (its rows or "
                          "values changed); evaluate on the table the model was trained on.")
    part = getattr(splits, split)
    enc = records.encoders
    groups = splits.test_groups if split == "test" else None
    logits = predict(model.to(device), part, device).numpy()
    row = task_metrics(enc.task, logits, targets_of(part).numpy(), groups, enc.target_mean, enc.target_std)
    row["params"] = sum(p.numel() for p in model.parameters())
    row.update({f"latency_b{b}_ms": latencies_ms({"m": model}, part.x, b, device)["m"] for b in (1, 512)})
    shown = [(label, key) for label, key in METRICS[enc.task] if key in row]
    fields = "all fields" if records.teacher else "serving-time fields"
    lines = [f"{name} on {splits.name} {split} ({len(part):,} rows, {fields}, {row['params']:,} parameters)"]
    lines += [f"  {label:<9} {row[key]:.4f}" for label, key in shown]
    lines += [f"  latency   batch 1: {row['latency_b1_ms']:.3f} ms, batch 512: {row['latency_b512_ms']:.3f} ms"]
    return "\n".join(lines)
