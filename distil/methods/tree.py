"""The loss of a soft decision tree student: Frosst & Hinton's cross-entropy of every leaf against the teacher's
soft targets, weighted by the leaf's path probability, instead of a divergence on the tree's mixed output.

The tree reports its per-leaf log path probabilities and leaf log-distributions in `Outputs.features` under the
keys below (distil.explain.soft_tree does, in training mode).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from distil.errors import DistilError
from distil.methods.base import Method, Outputs, register
from distil.methods.logits import TemperatureParams

LOG_PATH = "soft_tree.log_path"  # (B, leaves): log probability of reaching each leaf
LOG_LEAF = "soft_tree.log_leaf"  # (leaves, K): each leaf's log class distribution


class SoftTreeParams(TemperatureParams):
    """The temperature of the teacher's soft targets (1 in the paper)."""

    temperature: float = 1.0


@register("soft_tree_kd")
class SoftTreeKD(Method):
    """-log sum_l P_l(x) exp(sum_k p_k log Q_lk), p = softmax(teacher / T): each leaf learns the soft targets of
    the inputs that reach it, so the most probable leaf alone predicts well (the tree's readable path)."""

    paper = "Frosst, Hinton. Distilling a Neural Network Into a Soft Decision Tree. 2017"
    Params = SoftTreeParams

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        if LOG_PATH not in student.features or LOG_LEAF not in student.features:
            raise DistilError("soft_tree_kd needs a soft decision tree student (student.name: soft_tree); use kd "
                              "for other students.")
        soft = F.softmax(teacher.logits.float() / self.params.temperature, dim=-1)
        cross = soft @ student.features[LOG_LEAF].T  # (B, leaves): sum_k p_k log Q_lk
        return -torch.logsumexp(student.features[LOG_PATH] + cross, dim=1).mean()
