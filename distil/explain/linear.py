"""The `linear` student: multinomial logistic regression fitted on soft labels, optionally sparse (L1).

It minimises the mean cross-entropy between the target rows (the teacher's probabilities, or one-hot labels)
and softmax(x W + b), plus l2/2 |W|^2 + l1 |W|_1, full batch with FISTA (accelerated proximal gradient): the
L1 proximal step makes unused weights exactly zero. Deterministic: no sampling anywhere.
"""

from __future__ import annotations

import numpy as np

from distil.explain.config import LinearConfig
from distil.explain.students import Names, normalized


def softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise softmax, stable for large logits."""
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def fit_softmax_regression(x: np.ndarray, targets: np.ndarray, *, l1: float, l2: float,
                           iterations: int) -> tuple[np.ndarray, np.ndarray]:
    """(weights (K, F), biases (K,)) minimising soft cross-entropy + l2/2 |W|^2 + l1 |W|_1 (biases unpenalised)."""
    n, d = x.shape
    design = np.hstack([x.astype(np.float64), np.ones((n, 1))])
    targets = targets.astype(np.float64)
    # The cross-entropy gradient is Lipschitz with constant <= largest eigenvalue of X^T X / (2n).
    lipschitz = 0.5 * float(np.linalg.eigvalsh(design.T @ design / n)[-1]) + l2
    step = 1.0 / lipschitz
    w = np.zeros((d + 1, targets.shape[1]))
    momentum, t = w.copy(), 1.0
    for _ in range(iterations):
        grad = design.T @ (softmax(design @ momentum) - targets) / n
        grad[:d] += l2 * momentum[:d]
        new = momentum - step * grad
        new[:d] = np.sign(new[:d]) * np.maximum(np.abs(new[:d]) - step * l1, 0.0)
        t_next = (1.0 + np.sqrt(1.0 + 4.0 * t * t)) / 2.0
        momentum = new + ((t - 1.0) / t_next) * (new - w)
        w, t = new, t_next
    return w[:d].T.copy(), w[d].copy()


class LinearStudent:
    """softmax(x W^T + b); its decision path is the per-feature contributions to the predicted class's logit."""

    kind = "linear"

    def __init__(self, cfg: LinearConfig, num_classes: int) -> None:
        self.cfg = cfg
        self.num_classes = num_classes
        self.weights = np.zeros((num_classes, 0))
        self.bias = np.zeros(num_classes)
        self.feature_scale = np.zeros(0)

    def fit(self, x: np.ndarray, targets: np.ndarray) -> LinearStudent:
        """Fit on flattened inputs and probability rows (soft labels, or one-hot labels)."""
        self.weights, self.bias = fit_softmax_regression(x, targets, l1=self.cfg.l1, l2=self.cfg.l2,
                                                         iterations=self.cfg.iterations)
        self.feature_scale = x.std(axis=0).astype(np.float64)
        return self

    def data(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The fitted student as JSON-able settings and arrays (see distil.explain.bundle)."""
        return {"cfg": self.cfg.model_dump(), "num_classes": self.num_classes}, \
            {"weights": self.weights, "bias": self.bias, "feature_scale": self.feature_scale}

    @classmethod
    def from_data(cls, info: dict, arrays: dict[str, np.ndarray]) -> LinearStudent:
        """The student `data` described."""
        student = cls(LinearConfig.model_validate(info["cfg"]), info["num_classes"])
        student.weights, student.bias = arrays["weights"], arrays["bias"]
        student.feature_scale = arrays["feature_scale"]
        return student

    def logits(self, x: np.ndarray) -> np.ndarray:
        """x W^T + b."""
        return x.astype(np.float64) @ self.weights.T + self.bias

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """softmax of the logits."""
        return softmax(self.logits(x))

    def size(self) -> dict[str, int]:
        """Non-zero weights (biases not counted)."""
        return {"nonzero_weights": int(np.count_nonzero(self.weights))}

    def importance(self) -> np.ndarray:
        """Mean |weight| over classes times the feature's spread: how far the feature moves the logits."""
        return normalized(np.abs(self.weights).mean(axis=0) * self.feature_scale)

    def decision_path(self, x: np.ndarray, names: Names, top: int = 5) -> list[str]:
        """The predicted class's logit as bias plus its `top` largest per-feature contributions."""
        logits = self.logits(x[None])[0]
        k = int(np.argmax(logits))
        contrib = self.weights[k] * x.astype(np.float64)
        order = np.argsort(-np.abs(contrib))[:top]
        prob = softmax(logits[None])[0, k]
        lines = [f"class {names.classes[k]} (p={prob:.2f}): logit {logits[k]:.3g} = bias {self.bias[k]:.3g}"
                 f" + sum of {np.count_nonzero(contrib)} feature terms; largest:"]
        lines += [f"  {names.features[j]} = {x[j]:.3g} x weight {self.weights[k, j]:.3g} -> {contrib[j]:+.3g}"
                  for j in order]
        return lines
