"""Relation ("behaviour") losses: how samples of a batch relate to each other in the student's feature space should
match the teacher's (SP, RKD, PKT, CC). Features of any widths; by default the pooled features the classifiers
read (`@embedding`), any tap otherwise.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from distil.methods.base import Method, Outputs, register
from distil.methods.connectors import Embeddings


class RelationMethod(Method):
    """A loss on one student tap and one teacher tap, each flattened to (B, D); weight auto unless a recipe sets it."""

    Params = Embeddings
    default_weight = "auto"

    def student_taps(self) -> list[str]:
        """The student's tap."""
        return [self.params.student]

    def teacher_taps(self) -> list[str]:
        """The teacher's tap."""
        return [self.params.teacher]

    def vectors(self, student: Outputs, teacher: Outputs) -> tuple[Tensor, Tensor]:
        """Both features as float (B, D) matrices."""
        return (student.features[self.params.student].float().flatten(1),
                teacher.features[self.params.teacher].float().flatten(1))


def similarity(f: Tensor) -> Tensor:
    """SP's batch similarity: the Gram matrix of the flattened features, each row L2-normalized."""
    return F.normalize(f @ f.T, dim=1)


@register("sp")
class SP(RelationMethod):
    """Similarity-preserving: the student's row-normalized batch Gram matrix should equal the teacher's.

    The squared distance between matching unit-norm rows, averaged over the rows: the same size at any batch size
    (the paper's division by B^2 shrinks it as 1/B)."""

    paper = "Tung, Mori. Similarity-Preserving Knowledge Distillation. ICCV 2019"

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        fs, ft = self.vectors(student, teacher)
        return (similarity(fs) - similarity(ft)).pow(2).sum() / fs.shape[0]


def pairwise_distances(f: Tensor, eps: float = 1e-12) -> Tensor:
    """Euclidean distances between the rows of f (0 on the diagonal)."""
    squared = f.pow(2).sum(1)
    d = (squared[:, None] + squared[None, :] - 2 * f @ f.T).clamp_min(eps).sqrt()
    return d * (1 - torch.eye(len(f), device=f.device))


def normalized_distances(f: Tensor) -> Tensor:
    """Pairwise distances divided by their mean over distinct pairs (RKD's distance potential)."""
    d = pairwise_distances(f)
    return d / d[d > 0].mean().clamp_min(1e-12)


def angles(f: Tensor) -> Tensor:
    """Cosines of the angles at every vertex j of every triple (i, j, k): <e_ij, e_kj> with e unit differences."""
    e = F.normalize(f[None, :, :] - f[:, None, :], p=2, dim=2)
    return torch.bmm(e, e.transpose(1, 2)).flatten()


class RKDParams(Embeddings):
    """RKD's weights of its distance and angle terms."""

    distance: float = Field(25.0, ge=0, description="weight of the distance-wise term (paper: 25)")
    angle: float = Field(50.0, ge=0, description="weight of the angle-wise term (paper: 50)")


@register("rkd")
class RKD(RelationMethod):
    """Relational KD: Huber loss between normalized pairwise distances and between triplet angles of the batch."""

    paper = "Park, Kim, Lu, Cho. Relational Knowledge Distillation. CVPR 2019"
    Params = RKDParams

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        fs, ft = self.vectors(student, teacher)
        total = torch.zeros((), device=fs.device)
        if self.params.distance:
            total = total + self.params.distance * F.smooth_l1_loss(normalized_distances(fs),
                                                                    normalized_distances(ft))
        if self.params.angle:
            total = total + self.params.angle * F.smooth_l1_loss(angles(fs), angles(ft))
        return total


def cosine_probabilities(f: Tensor, eps: float = 1e-7) -> Tensor:
    """PKT's conditional probabilities: cosine similarities mapped to [0, 1], each row normalized to sum 1."""
    f = f / (f.norm(dim=1, keepdim=True) + eps)
    k = (f @ f.T + 1) / 2
    return k / k.sum(1, keepdim=True)


@register("pkt")
class PKT(RelationMethod):
    """Probabilistic knowledge transfer: KL between cosine-kernel distributions over the batch of both models.

    Each sample's KL (a sum over the batch), averaged over samples; a mean over all B^2 pairs would shrink as 1/B."""

    paper = "Passalis, Tefas. Learning Deep Representations with Probabilistic Knowledge Transfer. ECCV 2018"

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        fs, ft = self.vectors(student, teacher)
        p_s, p_t = cosine_probabilities(fs), cosine_probabilities(ft)
        eps = 1e-7
        return (p_t * ((p_t + eps) / (p_s + eps)).log()).sum(1).mean()


class CCParams(Embeddings):
    """The Gaussian kernel of CC and its Taylor order."""

    gamma: float = Field(0.4, gt=0, description="kernel width: k(x, y) = exp(-gamma |x - y|^2) on unit vectors")
    order: int = Field(2, ge=0, description="order of the kernel's Taylor expansion (paper: 2)")


def correlation(f: Tensor, gamma: float, order: int) -> Tensor:
    """CC's batch correlation: a P-order Taylor expansion of the Gaussian kernel between L2-normalized rows."""
    f = F.normalize(f, dim=1)
    dot = f @ f.T
    return sum(math.exp(-2 * gamma) * (2 * gamma) ** p / math.factorial(p) * dot.pow(p) for p in range(order + 1))


@register("cc")
class CC(RelationMethod):
    """Correlation congruence: the student's kernel correlation matrix over the batch should equal the teacher's."""

    paper = "Peng, Jin, Liu, Li, Wu, Liu, Zhou, Zhang. Correlation Congruence for Knowledge Distillation. ICCV 2019"
    Params = CCParams

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        fs, ft = self.vectors(student, teacher)
        g, p = self.params.gamma, self.params.order
        return (correlation(fs, g, p) - correlation(ft, g, p)).pow(2).mean()
