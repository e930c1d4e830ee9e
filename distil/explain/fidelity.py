"""Fidelity: how often a transparent student predicts what the teacher predicts, on test inputs and on
perturbed test inputs; with its accuracy on the labels."""

from __future__ import annotations

import numpy as np


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """The share of positions where two arrays of predicted classes are equal (1.0 for empty arrays)."""
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"cannot compare predictions shaped {a.shape} and {b.shape}")
    return float((a == b).mean()) if a.size else 1.0


def fidelity_scores(predicted: np.ndarray, labels: np.ndarray, teacher: np.ndarray, predicted_perturbed: np.ndarray,
                    teacher_perturbed: np.ndarray) -> dict[str, float]:
    """top1 (accuracy on the labels), fidelity (agreement with the teacher) and the same on perturbed inputs."""
    return {"top1": agreement(predicted, labels), "fidelity": agreement(predicted, teacher),
            "fidelity_perturbed": agreement(predicted_perturbed, teacher_perturbed)}
