"""Click-through distillation losses, registered in distil's loss registry when distil.tabular is imported.

Binary tabular models return logits [0, z]; these terms read z = logits[:, 1] - logits[:, 0] (a (B, 1) output is
read as z itself), so they work on any single-logit model.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from distil.errors import DistilError
from distil.methods.base import REGISTRY, Method, Outputs, register


def logit_of(logits: Tensor) -> Tensor:
    """The single logit z of [0, z] (or of a (B, 1) output), as (B,)."""
    return logits[..., 1] - logits[..., 0] if logits.shape[-1] == 2 else logits[..., 0]


def bernoulli_kd(student_z: Tensor, teacher_z: Tensor, temperature: float) -> Tensor:
    """KL(Bern(sigmoid(t/T)) || Bern(sigmoid(s/T))) averaged over the batch, times T^2."""
    t = temperature
    p = torch.sigmoid(teacher_z.float() / t)
    s = student_z.float() / t
    kl = F.binary_cross_entropy_with_logits(s, p, reduction="none") - \
        F.binary_cross_entropy_with_logits(teacher_z.float() / t, p, reduction="none")
    return kl.mean() * t * t


class BernoulliParams(BaseModel):
    """The temperature of a Bernoulli KD term."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(1.0, gt=0, description="both logits are divided by T; the loss is scaled by T^2")


class BernoulliKD(Method):
    """KD on the click probability: the student's Bernoulli at temperature T matches the teacher's."""

    paper = "Hinton et al. 2015, for one logit as in Zhu et al. Ensembled CTR Prediction via Knowledge " \
            "Distillation (CIKM 2020)"
    Params = BernoulliParams

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        return bernoulli_kd(logit_of(student.logits), logit_of(teacher.logits), self.params.temperature)


class GateParams(BernoulliParams):
    """A Bernoulli KD term against a gated ensemble of teachers."""

    hidden: int = Field(16, ge=1, description="the gate's hidden width")


class EnsembleGate(Method):
    """Distil from a per-sample gated mix of teachers: a small gate over the members' logits learns, on the labels,
    which teacher to trust for each sample; the student matches the gated teacher (Bernoulli KD at T).

    Needs an ensemble teacher (its outputs carry `features["members"]`).
    """

    paper = "Zhu, Liu, Tang, et al. Ensembled CTR Prediction via Knowledge Distillation. CIKM 2020"
    Params = GateParams

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.gate: nn.Module | None = None

    def prepare(self, student: Outputs, teacher: Outputs | None, num_samples: int) -> None:
        members = self._members(teacher)
        m = members.shape[1]
        self.gate = nn.Sequential(nn.Linear(m, self.params.hidden), nn.ReLU(), nn.Linear(self.params.hidden, m))
        self.gate.to(members.device)

    def _members(self, teacher: Outputs | None) -> Tensor:
        if teacher is None or "members" not in teacher.features:
            raise DistilError("distill.losses: ensemble_gate needs several teachers (tabular.distill_from: ensemble).")
        return logit_of(teacher.features["members"])  # (B, M)

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        members = self._members(teacher).float()
        weights = torch.softmax(self.gate(members), dim=1)
        gated = (weights * members).sum(1)
        fit_gate = F.binary_cross_entropy_with_logits(gated, target.float())  # trains the gate only
        return fit_gate + bernoulli_kd(logit_of(student.logits), gated.detach(), self.params.temperature)


class MSELabel(Method):
    """Mean squared error with the (standardised) regression target: the label term of regression tasks."""

    paper = "-"
    needs_teacher = False

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        return F.mse_loss(student.logits[:, 0].float(), target.float())


for _name, _cls in (("bernoulli_kd", BernoulliKD), ("ensemble_gate", EnsembleGate), ("mse_label", MSELabel)):
    if _name not in REGISTRY:  # importing twice (e.g. a reload) keeps the first registration
        register(_name)(_cls)
