"""Logit-based losses: cross-entropy on labels, Hinton's KD, and MSE between logits."""

from __future__ import annotations

import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from distil.methods.base import Method, Outputs, register


class TemperatureParams(BaseModel):
    """Parameters of a temperature-softened loss."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(4.0, gt=0, description="softmax temperature T; the loss is scaled by T^2")


class CEParams(BaseModel):
    """Parameters of the label loss."""

    model_config = ConfigDict(extra="forbid")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing (0 = none)")


@register("ce")
class CE(Method):
    """Cross-entropy with the true labels (the hard-target term)."""

    paper = "-"
    needs_teacher = False
    Params = CEParams

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        return F.cross_entropy(student.logits, target, label_smoothing=self.params.label_smoothing)


def soft_kl(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """KL(teacher_T || student_T) averaged over the batch and scaled by T^2 (Hinton et al.)."""
    t = temperature
    log_p_student = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_teacher = F.log_softmax(teacher_logits.float() / t, dim=-1)
    return F.kl_div(log_p_student, log_p_teacher, log_target=True, reduction="batchmean") * (t * t)


@register("kd")
class KD(Method):
    """Soft targets: KL between teacher and student distributions softened at temperature T, times T^2."""

    paper = "Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network. 2015"
    Params = TemperatureParams

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        return soft_kl(student.logits, teacher.logits, self.params.temperature)


@register("mse_logits")
class MSELogits(Method):
    """Mean squared error between student and teacher logits (logit matching)."""

    paper = "Ba, Caruana. Do Deep Nets Really Need to be Deep? 2014"

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        return F.mse_loss(student.logits.float(), teacher.logits.float())
