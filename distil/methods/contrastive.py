"""Contrastive representation distillation (CRD): the student's embedding of a sample should pick out the teacher's
embedding of the same sample among K others, with memory banks of past embeddings keyed by sample index."""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from distil.errors import DistilError
from distil.methods.base import Method, Outputs, register
from distil.methods.connectors import Embeddings


class CRDParams(Embeddings):
    """CRD's embedding size, negatives, temperature and memory momentum."""

    feat_dim: int = Field(128, ge=1, description="size of the shared embedding space")
    nce_k: int = Field(4096, ge=1, description="negatives per sample (capped at the training-set size - 1; "
                       "paper: 16384 on CIFAR-100)")
    nce_t: float = Field(0.07, gt=0, description="temperature of the embedding similarities")
    momentum: float = Field(0.5, ge=0, lt=1, description="momentum of the memory-bank update")
    negatives: Literal["uniform", "exact"] = Field("uniform", description="uniform: any other sample; exact: samples "
                                                   "of other classes only (the paper's CRD+ 'exact' negatives)")


def nce_loss(scores: Tensor, num_samples: int) -> Tensor:
    """NCE with the positive in column 0 and K noise samples (uniform noise, probability 1/N each)."""
    k = scores.shape[1] - 1
    noise = k / num_samples
    eps = 1e-7
    positive = (scores[:, 0] / (scores[:, 0] + noise + eps)).log()
    negative = (noise / (scores[:, 1:] + noise + eps)).log()
    return -(positive.sum() + negative.sum()) / scores.shape[0]


def similarities(v: Tensor, memory: Tensor, rows: Tensor) -> Tensor:
    """v[i] . memory[rows[i, j]] for each sample i and drawn row j: through one (B, N) product when the rows are a
    large share of the bank, else by gathering only the rows drawn."""
    if rows.shape[1] * 4 >= memory.shape[0]:
        return (v @ memory.clone().T).gather(1, rows)  # a copy: the bank is updated in place after this step
    return torch.bmm(memory[rows], v[:, :, None]).squeeze(2)


@register("crd")
class CRD(Method):
    """Contrastive representation distillation: NCE of student vs teacher embeddings against K negatives.

    Each model's embedding is scored against a momentum memory bank of the other model's embeddings, one row per
    training sample (keyed by `Outputs.index`). With `negatives: exact` a sample's negatives come from other classes
    only (each sample's label is remembered when it is first seen; unseen ones count as other classes)."""

    paper = "Tian, Krishnan, Isola. Contrastive Representation Distillation. ICLR 2020"
    Params = CRDParams
    default_weight = "auto"

    def student_taps(self) -> list[str]:
        """The student's tap."""
        return [self.params.student]

    def teacher_taps(self) -> list[str]:
        """The teacher's tap."""
        return [self.params.teacher]

    def prepare(self, student: Outputs, teacher: Outputs | None, num_samples: int) -> None:
        """Both embedding heads and both memory banks (one row per training sample), and the unset normalizers."""
        fs, ft = student.features[self.params.student], teacher.features[self.params.teacher]
        if num_samples < 2:
            raise DistilError("distill.losses.crd: contrasting needs at least 2 training samples; use more data.")
        d = self.params.feat_dim
        device = fs.device
        self.num_samples = num_samples
        self.embed_s = nn.Linear(fs.flatten(1).shape[1], d).to(device)
        self.embed_t = nn.Linear(ft.flatten(1).shape[1], d).to(device)
        bound = 1 / math.sqrt(d / 3)
        for name in ("memory_s", "memory_t"):
            self.register_buffer(name, torch.rand(num_samples, d, device=device) * 2 * bound - bound)
        self.register_buffer("z", torch.full((2,), -1.0, device=device))  # NCE normalizers, fixed at the first step
        self.register_buffer("labels", torch.full((num_samples,), -1, dtype=torch.long, device=device))

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        index = student.index
        if index is None:
            raise DistilError("distill.losses.crd: needs each sample's index (Outputs.index, which the engine sets); "
                              "train crd through the engine, or pass the indices of the batch.")
        n, k = self.num_samples, min(self.params.nce_k, self.num_samples - 1)
        with torch.autocast(index.device.type, enabled=False):
            v_s = F.normalize(self.embed_s(student.features[self.params.student].float().flatten(1)), dim=1)
            v_t = F.normalize(self.embed_t(teacher.features[self.params.teacher].float().flatten(1)), dim=1)
            noise = self.negatives(index, target, k)
            rows = torch.cat([index[:, None], noise], dim=1)
            scores_s = torch.exp(similarities(v_s, self.memory_t, rows) / self.params.nce_t)
            scores_t = torch.exp(similarities(v_t, self.memory_s, rows) / self.params.nce_t)
            first = torch.stack([scores_s.mean(), scores_t.mean()]).detach() * n
            z = torch.where(self.z < 0, first, self.z)  # set at the first step, then fixed; no host sync
            loss = nce_loss(scores_s / z[0], n) + nce_loss(scores_t / z[1], n)
            self.z.copy_(z)
            with torch.no_grad():
                m = self.params.momentum
                for memory, v in ((self.memory_s, v_s), (self.memory_t, v_t)):
                    memory[index] = F.normalize(memory[index] * m + v.detach() * (1 - m), dim=1)
        return loss

    def negatives(self, index: Tensor, target: Tensor, k: int) -> Tensor:
        """K rows per sample: any other sample (uniform), or one of another class (exact) where the bank has any."""
        n = self.num_samples
        noise = torch.randint(0, n - 1, (len(index), k), device=index.device)
        noise = noise + (noise >= index[:, None]).long()  # never the positive itself
        if self.params.negatives == "uniform":
            return noise
        self.labels[index] = target
        for c in target.unique().tolist():
            pool = (self.labels != c).nonzero().squeeze(1)
            rows = (target == c).nonzero().squeeze(1)
            if len(pool):
                noise[rows] = pool[torch.randint(0, len(pool), (len(rows), k), device=index.device)]
        return noise
