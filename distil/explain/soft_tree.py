"""The `soft_tree` student: Frosst & Hinton's soft decision tree ("Distilling a Neural Network Into a Soft
Decision Tree", 2017), a PyTorch model the engine trains with the distillation losses like any other student.

Inner node i sends an input right with probability sigmoid(beta * (x . w_i + b_i)); a leaf's path probability
is the product of the branch probabilities on its way down, and each leaf holds a learned class distribution
softmax(phi_l). Training uses the path-probability mixture of the leaf distributions (differentiable);
prediction uses the leaf with the largest path probability (`max_path`, one readable path) or the mixture.

The paper's penalty keeps splits balanced: with alpha_i the path-weighted share of the batch that node i sends
right, C = -lambda * sum_i 2^-depth(i) * (log alpha_i + log(1 - alpha_i)) / 2. It rides along the backward pass
(every backward adds its gradient), so whichever losses the recipe gives, the splits are balanced too.
"""

from __future__ import annotations

import math
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distil.errors import DistilError
from distil.explain.students import Names, class_summary, normalized
from distil.methods.base import Outputs
from distil.methods.tree import LOG_LEAF, LOG_PATH
from distil.recipe import ModelConfig

DEFAULT_DEPTH = 4
MAX_DEPTH = 10


class _PenaltyInBackward(torch.autograd.Function):
    """Identity on a tensor whose backward also sends gradient 1 into the penalty: the penalty joins any loss."""

    @staticmethod
    def forward(ctx, tensor: Tensor, penalty: Tensor) -> Tensor:
        return tensor.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, Tensor]:
        return grad, grad.new_ones(())


def route_matrix(depth: int, level: int) -> Tensor:
    """(2N, 2^level) 0/1 matrix for a tree of `depth`: row i (i < N) marks the level's nodes whose path turns left
    at inner node i, row N + i those that turn right; so log branch probabilities @ it = log path probabilities.

    Inner nodes are numbered in level order (the children of node g are 2g + 1 and 2g + 2); the j-th node of a
    level is reached by reading j's bits from the most significant, 0 = left, 1 = right.
    """
    inner = 2**depth - 1
    out = torch.zeros(2 * inner, 2**level)
    for j in range(2**level):
        node = 0
        for step in range(level):
            right = (j >> (level - 1 - step)) & 1
            out[node + right * inner, j] = 1.0
            node = 2 * node + 1 + right
    return out


class SoftDecisionTree(nn.Module):
    """A complete binary soft tree: `inner` holds one filter per inner node (level order), `leaves` the logits phi."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, depth: int = DEFAULT_DEPTH, beta: float = 1.0,
                 penalty: float = 0.1, prediction: Literal["max_path", "mixture"] = "max_path") -> None:
        super().__init__()
        if not 1 <= depth <= MAX_DEPTH:
            raise DistilError(f"soft_tree depth {depth} is out of range; use a depth from 1 to {MAX_DEPTH}.")
        self.depth = depth
        self.penalty = penalty
        self.prediction = prediction
        self.flatten = nn.Flatten()
        self.inner = nn.Linear(math.prod(input_shape), 2**depth - 1)
        self.leaves = nn.Parameter(torch.zeros(2**depth, num_classes))
        self.register_buffer("beta", torch.tensor(float(beta)))
        levels = torch.cat([torch.full((2**d,), float(d)) for d in range(depth)])
        self.register_buffer("level_weight", 2.0 ** -levels, persistent=False)
        self.register_buffer("leaf_route", route_matrix(depth, depth), persistent=False)
        self.register_buffer("node_route", torch.cat([route_matrix(depth, d) for d in range(depth)], dim=1),
                             persistent=False)

    def routing(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(right-branch probabilities per inner node, log path probability per leaf, reach per inner node)."""
        z = self.beta * self.inner(self.flatten(x))
        branch = torch.cat([F.logsigmoid(-z), F.logsigmoid(z)], dim=1)  # log p(left), log p(right) per node
        return torch.sigmoid(z), branch @ self.leaf_route, (branch @ self.node_route).exp()

    def balance_penalty(self, right: Tensor, reach: Tensor) -> Tensor:
        """The paper's penalty: -lambda sum_i 2^-d(i) (log alpha_i + log(1 - alpha_i)) / 2 over this batch."""
        alpha = (reach * right).sum(0) / reach.sum(0).clamp_min(1e-12)
        alpha = alpha.clamp(1e-6, 1 - 1e-6)
        return -self.penalty * (self.level_weight * 0.5 * (alpha.log() + (1 - alpha).log())).sum()

    def forward(self, x: Tensor) -> Tensor | Outputs:
        """Log class probabilities (B, K): the leaf mixture when training or `mixture`, else the max-path leaf's.

        In training mode the result is Outputs whose features also hold the log path probabilities and the leaves'
        log distributions, for the soft_tree_kd loss.
        """
        right, log_path, reach = self.routing(x)
        log_q = F.log_softmax(self.leaves, dim=-1)
        if self.training and self.penalty > 0:  # every loss reads the routing through log_path: the penalty joins once
            log_path = _PenaltyInBackward.apply(log_path, self.balance_penalty(right, reach))
        if not (self.training or self.prediction == "mixture"):
            return log_q[log_path.argmax(dim=1)]
        out = torch.logsumexp(log_path[:, :, None] + log_q[None], dim=1)
        return Outputs(out, {LOG_PATH: log_path, LOG_LEAF: log_q}) if self.training else out


def build_soft_tree(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int,
                    depth: int = DEFAULT_DEPTH) -> SoftDecisionTree:
    """The `soft_tree` / `soft_tree_<depth>` zoo entry: beta 1, penalty 0.1, max-path prediction."""
    return SoftDecisionTree(input_shape, num_classes, depth=depth)


class SoftTreeStudent:
    """A trained SoftDecisionTree seen as a transparent student (numpy in, numpy out)."""

    kind = "soft_tree"

    def __init__(self, model: SoftDecisionTree, x_fit: np.ndarray | None = None,
                 reach: np.ndarray | None = None) -> None:
        self.model = model.cpu().eval()
        if reach is None:
            with torch.no_grad():
                _, _, visits = self.model.routing(torch.from_numpy(x_fit.astype(np.float32)))
            reach = visits.mean(0).numpy()
        self.reach = reach  # how often each inner node is visited by the inputs it learned from

    def data(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The trained student as JSON-able settings and arrays (see distil.explain.bundle)."""
        m = self.model
        info = {"features": m.inner.in_features, "num_classes": m.leaves.shape[1], "depth": m.depth,
                "penalty": m.penalty, "prediction": m.prediction}
        weights = {f"state.{k}": v.detach().cpu().numpy() for k, v in m.state_dict().items()}
        return info, {**weights, "reach": self.reach}

    @classmethod
    def from_data(cls, info: dict, arrays: dict[str, np.ndarray]) -> SoftTreeStudent:
        """The student `data` described."""
        state = {k.removeprefix("state."): torch.from_numpy(v) for k, v in arrays.items() if k.startswith("state.")}
        model = SoftDecisionTree((info["features"],), info["num_classes"], depth=info["depth"],
                                 beta=float(state["beta"]), penalty=info["penalty"], prediction=info["prediction"])
        model.load_state_dict(state)
        return cls(model, reach=arrays["reach"])

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """The prediction's class probabilities (max-path leaf, or mixture)."""
        with torch.no_grad():
            return self.model(torch.from_numpy(x.astype(np.float32))).exp().double().numpy()

    @property
    def filters(self) -> np.ndarray:
        """The inner nodes' weight vectors (nodes, features), in level order."""
        return self.model.inner.weight.detach().numpy()

    @property
    def leaf_distributions(self) -> np.ndarray:
        """Each leaf's class distribution (leaves, K)."""
        return F.softmax(self.model.leaves.detach(), dim=-1).numpy()

    def size(self) -> dict[str, int]:
        """Inner nodes, leaves, depth and non-zero parameters."""
        nonzero = sum(int(torch.count_nonzero(p)) for p in self.model.parameters())
        return {"inner_nodes": 2**self.model.depth - 1, "leaves": 2**self.model.depth, "depth": self.model.depth,
                "nonzero_weights": nonzero}

    def importance(self) -> np.ndarray:
        """|filter weight| per feature, each node weighted by how often inputs reach it."""
        return normalized(self.reach @ np.abs(self.filters))

    def decision_path(self, x: np.ndarray, names: Names, top: int = 3) -> list[str]:
        """The inner nodes on the way to the most probable leaf, each with its branch probability and top features."""
        with torch.no_grad():
            right, log_path, _ = self.model.routing(torch.from_numpy(x[None].astype(np.float32)))
        leaf = int(log_path[0].argmax())
        lines, node = [], 0
        for level in range(self.model.depth):
            go_right = bool((leaf >> (self.model.depth - 1 - level)) & 1)
            contrib = self.filters[node] * x
            order = np.argsort(-np.abs(contrib))[:top]
            terms = ", ".join(f"{names.features[j]} {contrib[j]:+.2g}" for j in order)
            lines.append(f"node {node} (level {level}): p(right) = {float(right[0, node]):.2f} -> "
                         f"{'right' if go_right else 'left'}  [largest terms: {terms}]")
            node = 2 * node + (2 if go_right else 1)
        dist = self.leaf_distributions[leaf]
        lines.append(f"leaf {leaf} (path probability {float(log_path[0, leaf].exp()):.2f}): "
                     f"{class_summary(dist, names)}")
        return lines
