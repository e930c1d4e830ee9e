"""What every transparent student offers (predict, size, importance, decision path) and how features are named."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class Names:
    """How explanations name the input features and the classes."""

    features: list[str]
    classes: list[str]


class Transparent(Protocol):
    """A model a person can read: it predicts class probabilities on flattened inputs and explains itself."""

    kind: str

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Class probabilities (n, K) for flattened inputs (n, features)."""
        ...

    def size(self) -> dict[str, int]:
        """How big the model is to read: nodes, leaves, depth, rules, conditions or non-zero weights."""
        ...

    def importance(self) -> np.ndarray:
        """Global importance of each input feature (non-negative, summing to 1 unless all are zero)."""
        ...

    def decision_path(self, x: np.ndarray, names: Names) -> list[str]:
        """Lines saying how the model reached its prediction for one flattened input."""
        ...


def feature_names(input_shape: tuple[int, ...], given: list[str] | None = None) -> list[str]:
    """The names of the flattened input features: `given` when the data has them, `pixel[r,c]` for images, else x[i]."""
    count = math.prod(input_shape)
    if given is not None:
        if len(given) != count:
            raise ValueError(f"{len(given)} feature names for {count} features")
        return list(given)
    shape = tuple(input_shape)
    if len(shape) == 3:
        channels, height, width = shape
        if channels == 1:
            return [f"pixel[{r},{c}]" for r in range(height) for c in range(width)]
        return [f"pixel[{ch},{r},{c}]" for ch in range(channels) for r in range(height) for c in range(width)]
    if len(shape) == 2:
        return [f"x[{ch},{i}]" for ch in range(shape[0]) for i in range(shape[1])]
    return [f"x[{i}]" for i in range(count)]


def is_image(input_shape: tuple[int, ...]) -> bool:
    """Whether inputs are (C, H, W) images with both sides longer than one pixel."""
    return len(input_shape) == 3 and input_shape[1] > 1 and input_shape[2] > 1


def one_hot(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Hard labels as probability rows."""
    out = np.zeros((len(labels), num_classes), dtype=np.float64)
    out[np.arange(len(labels)), labels] = 1.0
    return out


def normalized(values: np.ndarray) -> np.ndarray:
    """Non-negative values scaled to sum to 1 (all zeros stay zeros)."""
    values = np.abs(np.asarray(values, dtype=np.float64))
    total = values.sum()
    return values / total if total > 0 else values


def class_summary(distribution: np.ndarray, names: Names) -> str:
    """'7 (p=0.93)': the most probable class of a distribution and its probability."""
    k = int(np.argmax(distribution))
    return f"{names.classes[k]} (p={distribution[k]:.2f})"
