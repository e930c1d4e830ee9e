"""Metrics for click-through and tabular tasks: AUC, log-loss, gAUC (per group), ECE; RMSE / MAE for regression."""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def auc(y: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties count half), from ranks; NaN when one class is absent."""
    y = np.asarray(y).astype(bool)
    pos, neg = int(y.sum()), int((~y).sum())
    if pos == 0 or neg == 0:
        return float("nan")
    ranks = rankdata(score)
    return float((ranks[y].sum() - pos * (pos + 1) / 2) / (pos * neg))


def log_loss(y: np.ndarray, p: np.ndarray, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities `p` for labels `y`."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1 - eps)
    y = np.asarray(y, dtype=np.float64)
    return float(-(y * np.log(p) + (1 - y) * np.log(1 - p)).mean())


def group_auc(y: np.ndarray, score: np.ndarray, groups: np.ndarray) -> float:
    """gAUC: each group's AUC weighted by its rows, over groups that hold both classes (Zhou et al. 2018, DIN)."""
    total, weight = 0.0, 0
    order = np.argsort(groups, kind="stable")
    g, y, score = np.asarray(groups)[order], np.asarray(y)[order], np.asarray(score)[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    for lo, hi in zip(starts, [*starts[1:], len(g)]):
        a = auc(y[lo:hi], score[lo:hi])
        if not np.isnan(a):
            total += a * (hi - lo)
            weight += hi - lo
    return total / weight if weight else float("nan")


def binary_ece(y: np.ndarray, p: np.ndarray, bins: int = 15) -> float:
    """Expected calibration error of the positive-class probability: |mean p - positive rate| over equal bins."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    which = np.minimum((p * bins).astype(int), bins - 1)
    err = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            err += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(err)


def binary_metrics(logits: np.ndarray, y: np.ndarray, groups: np.ndarray | None, bins: int = 15) -> dict:
    """AUC, log-loss, gAUC, ECE and accuracy of [0, z] (or (B, 2)) logits against 0/1 labels."""
    logits = np.asarray(logits, dtype=np.float64)
    z = logits[:, 1] - logits[:, 0]
    p = 1.0 / (1.0 + np.exp(-z))
    out = {"auc": auc(y, z), "logloss": log_loss(y, p), "ece": binary_ece(y, p, bins),
           "accuracy": float(((z > 0) == (np.asarray(y) == 1)).mean())}
    if groups is not None:
        out["gauc"] = group_auc(y, z, groups)
    return out


def multiclass_metrics(logits: np.ndarray, y: np.ndarray) -> dict:
    """Accuracy and log-loss of softmax logits."""
    logits = np.asarray(logits, dtype=np.float64)
    shifted = logits - logits.max(1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(1, keepdims=True))
    return {"accuracy": float((logits.argmax(1) == y).mean()), "logloss": float(-logp[np.arange(len(y)), y].mean())}


def regression_metrics(pred: np.ndarray, y: np.ndarray, mean: float, std: float) -> dict:
    """RMSE and MAE in the target's own units (predictions and labels are standardised)."""
    err = (np.asarray(pred, dtype=np.float64).reshape(-1) - np.asarray(y, dtype=np.float64)) * std
    return {"rmse": float(np.sqrt((err ** 2).mean())), "mae": float(np.abs(err).mean())}


def task_metrics(task: str, logits: np.ndarray, y: np.ndarray, groups: np.ndarray | None, mean: float = 0.0,
                 std: float = 1.0) -> dict:
    """The metrics that fit the task."""
    if task == "binary":
        return binary_metrics(logits, y, groups)
    if task == "multiclass":
        return multiclass_metrics(logits, y)
    return regression_metrics(logits, y, mean, std)


HEADLINE = {"binary": ("auc", True), "multiclass": ("accuracy", True), "regression": ("rmse", False)}
