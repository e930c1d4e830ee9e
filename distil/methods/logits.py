"""Logit-based losses: cross-entropy on labels, KD and its descendants (DKD, DIST, LS-KD, MLKD, CTKD, NKD), and
MSE between logits."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

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


class WarmupParams(TemperatureParams):
    """A temperature and an optional linear warm-up of the term."""

    warmup: float = Field(0.0, ge=0, lt=1, description="fraction of training over which the term ramps up linearly "
                          "from 0 (mdistiller warms DKD up over 20 of 240 epochs, about 0.08)")


class Progressive(Method):
    """A method that follows how far through training the engine is (`set_progress`)."""

    progress: float = 0.0

    def set_progress(self, progress: float) -> None:
        """Remember the fraction of training done (the engine calls this before every step)."""
        self.progress = progress

    def ramp(self) -> float:
        """The warm-up factor: progress / warmup, capped at 1 (1 without warm-up)."""
        warmup = self.params.warmup
        return min(1.0, self.progress / warmup) if warmup > 0 else 1.0


NON_TARGET = 1e4  # subtracted from the target logit to drop it from a softmax without -inf (and NaN gradients)


def dkd_parts(student_logits: Tensor, teacher_logits: Tensor, target: Tensor, temperature: float) -> tuple[Tensor,
                                                                                                         Tensor]:
    """Per-sample TCKD and NCKD at temperature T, both times T^2 (Zhao et al.: KD = TCKD + (1 - p_t^T) NCKD)."""
    t = temperature
    s, te = student_logits.float() / t, teacher_logits.float() / t
    gt = F.one_hot(target, s.shape[-1]).bool()

    def binary(z: Tensor) -> Tensor:  # log [p_target, p_rest] from logits, stably
        total = z.logsumexp(-1)
        return torch.stack([z[gt] - total, z.masked_fill(gt, -torch.inf).logsumexp(-1) - total], dim=-1)

    log_b_s, log_b_t = binary(s), binary(te)
    tckd = (log_b_t.exp() * (log_b_t - log_b_s)).sum(-1)
    log_q_s = F.log_softmax(s - NON_TARGET * gt, dim=-1)
    log_q_t = F.log_softmax(te - NON_TARGET * gt, dim=-1)
    nckd = (log_q_t.exp() * (log_q_t - log_q_s)).sum(-1)
    return tckd * t * t, nckd * t * t


class DKDParams(WarmupParams):
    """DKD's weights of the target-class and non-target-class parts."""

    alpha: float = Field(1.0, ge=0, description="weight of TCKD (target class vs the rest)")
    beta: float | None = Field(None, ge=0, description="weight of NCKD (among the non-target classes); default: the "
                               "paper's 8 for 100 classes, scaled by the number of non-target classes (C-1)/99, "
                               "at least 1")


@register("dkd")
class DKD(Progressive):
    """Decoupled KD: alpha * TCKD (target vs rest) + beta * NCKD (distribution over the non-target classes)."""

    paper = "Zhao, Cui, Song, Qiu, Liang. Decoupled Knowledge Distillation. CVPR 2022"
    Params = DKDParams

    def beta(self, classes: int) -> float:
        """NCKD's weight: the given beta, or 8 (the paper's, 100 classes) times (C - 1) / 99, at least 1."""
        return self.params.beta if self.params.beta is not None else max(1.0, 8.0 * (classes - 1) / 99)

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        tckd, nckd = dkd_parts(student.logits, teacher.logits, target, self.params.temperature)
        beta = self.beta(student.logits.shape[-1])
        return self.ramp() * (self.params.alpha * tckd + beta * nckd).mean()


def pearson(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of matching rows of a and b (one value per row)."""
    a = a - a.mean(-1, keepdim=True)
    b = b - b.mean(-1, keepdim=True)
    return (a * b).sum(-1) / (a.norm(dim=-1) * b.norm(dim=-1) + eps)


class DISTParams(TemperatureParams):
    """DIST's weights of its two relations."""

    temperature: float = Field(1.0, gt=0, description="softmax temperature T; the loss is scaled by T^2")
    beta: float = Field(1.0, ge=0, description="weight of the inter-class relation (per sample, across classes)")
    gamma: float = Field(1.0, ge=0, description="weight of the intra-class relation (per class, across the batch)")


@register("dist")
class DIST(Method):
    """Matches relations, not values: 1 - Pearson correlation of the predictions per sample and per class."""

    paper = "Huang, You, Wang, Qian, Xu. Knowledge Distillation from A Stronger Teacher. NeurIPS 2022"
    Params = DISTParams

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        t = self.params.temperature
        p_s = F.softmax(student.logits.float() / t, dim=-1)
        p_t = F.softmax(teacher.logits.float() / t, dim=-1)
        inter = 1 - pearson(p_s, p_t).mean()
        intra = 1 - pearson(p_s.T, p_t.T).mean()
        return t * t * (self.params.beta * inter + self.params.gamma * intra)


def standardize(logits: Tensor, eps: float = 1e-7) -> Tensor:
    """Z-score each row of logits: subtract its mean, divide by its standard deviation."""
    logits = logits.float()
    return (logits - logits.mean(-1, keepdim=True)) / (logits.std(-1, keepdim=True) + eps)


class LSKDParams(TemperatureParams):
    """The base temperature applied to standardized logits."""

    temperature: float = Field(2.0, gt=0, description="base temperature on the z-scored logits; loss scaled by T^2")


@register("ls_kd")
class LSKD(Method):
    """KD on z-score standardized logits: invariant to each model's logit shift and scale."""

    paper = "Sun, Ren, Li, Wang, Cao. Logit Standardization in Knowledge Distillation. CVPR 2024"
    Params = LSKDParams

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        return soft_kl(standardize(student.logits), standardize(teacher.logits), self.params.temperature)


class MLKDParams(BaseModel):
    """The temperatures MLKD aligns predictions at and the weight of each level."""

    model_config = ConfigDict(extra="forbid")
    temperatures: list[float] = Field(default_factory=lambda: [2.0, 3.0, 4.0, 5.0, 6.0], min_length=1,
                                      description="temperatures of the prediction augmentation (paper: 2..6)")
    instance: float = Field(1.0, ge=0, description="weight of the instance level (KD)")
    batch: float = Field(1.0, ge=0, description="weight of the batch level (mean over the B x B similarities)")
    classes: float = Field(1.0, ge=0, description="weight of the class level (mean over the C x C correlations)")


@register("mlkd")
class MLKD(Method):
    """Multi-level logit distillation: instance, batch and class-level alignment at several temperatures.

    Instance: KD; batch: the B x B similarity of predictions; class: the C x C class correlation, both as means
    over their entries so the loss keeps its size at any batch size and class count (the official sums grow with
    B and C). Without the paper's strong-augmentation views (and its confidence masks, which the official code
    reduces to a constant)."""

    paper = "Jin, Wang, Lin. Multi-Level Logit Distillation. CVPR 2023"
    Params = MLKDParams

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        total = torch.zeros((), device=student.logits.device)
        w = self.params
        for t in self.params.temperatures:
            p_s = F.softmax(student.logits.float() / t, dim=-1)
            p_t = F.softmax(teacher.logits.float() / t, dim=-1)
            instance = soft_kl(student.logits, teacher.logits, t)
            batch_level = ((p_s @ p_s.T - p_t @ p_t.T) ** 2).mean()
            class_level = ((p_s.T @ p_s / len(p_s) - p_t.T @ p_t / len(p_t)) ** 2).mean()
            total = total + w.instance * instance + w.batch * batch_level + w.classes * class_level
        return total


class GradientReversal(torch.autograd.Function):
    """Identity forward; the backward pass multiplies the gradient by -scale (Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:  # noqa: D102
        ctx.scale = scale
        return x.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: D102
        return -ctx.scale * grad, None


class CTKDParams(BaseModel):
    """CTKD's temperature range and the curriculum of its adversarial strength."""

    model_config = ConfigDict(extra="forbid")
    t_min: float = Field(1.0, gt=0, description="lowest temperature: T = t_min + t_range * sigmoid(theta)")
    t_range: float = Field(20.0, gt=0, description="span of the learnable temperature")
    lambda_max: float = Field(1.0, ge=0, description="final strength of the reversed gradient on the temperature")
    warmup: float = Field(0.05, gt=0, le=1, description="fraction of training over which lambda rises from 0 to "
                          "lambda_max by a cosine (paper: 10 of 240 epochs)")


@register("ctkd")
class CTKD(Progressive):
    """KD at a learnable temperature trained adversarially (gradient reversal) with an easy-to-hard curriculum.

    The temperature parameter has its own SGD group (momentum 0.9, no weight decay) at the stage's lr, as in the
    paper's code, so the reversed gradient's strength lambda moves it under AdamW as well."""

    paper = "Li, Li, Yang, Zhang, Lu, Yang. Curriculum Temperature for Knowledge Distillation. AAAI 2023"
    Params = CTKDParams

    def __init__(self, weight: float | str | None = None, ratio: float | None = None, **params) -> None:
        super().__init__(weight, ratio, **params)
        self.theta = nn.Parameter(torch.ones(()))  # the official global temperature's initial value

    def strength(self) -> float:
        """Lambda at the current progress: a cosine rise from 0 to lambda_max over the warm-up, then constant."""
        p = min(1.0, self.progress / self.params.warmup)
        return self.params.lambda_max * 0.5 * (1 - math.cos(math.pi * p))

    def sgd_parameters(self) -> list[nn.Parameter]:
        """The temperature trains by SGD, so lambda (a gradient scale) acts even when the student uses AdamW."""
        return [self.theta]

    @property
    def temperature(self) -> Tensor:
        """The current temperature (without gradient reversal)."""
        return self.params.t_min + self.params.t_range * torch.sigmoid(self.theta.detach())

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        theta = GradientReversal.apply(self.theta, self.strength())
        t = self.params.t_min + self.params.t_range * torch.sigmoid(theta)
        log_p_s = F.log_softmax(student.logits.float() / t, dim=-1)
        log_p_t = F.log_softmax(teacher.logits.float() / t, dim=-1)
        return F.kl_div(log_p_s, log_p_t, log_target=True, reduction="batchmean") * t * t


class NKDParams(BaseModel):
    """NKD's temperature and the weight of the normalized non-target part."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(1.0, gt=0, description="temperature of the non-target distributions")
    gamma: float = Field(1.5, ge=0, description="weight of the normalized non-target loss (paper: 1.5)")


@register("nkd")
class NKD(Method):
    """Normalized KD: teacher-weighted target log-likelihood plus CE between normalized non-target distributions.

    Not zero when the student equals the teacher: both parts are cross-entropies."""

    paper = "Yang, Zeng, Li, Zhang, Yuan, Li. From Knowledge Distillation to Self-Knowledge Distillation: A Unified "\
            "Approach with Normalized Loss and Customized Soft Labels. ICCV 2023"
    Params = NKDParams

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        s, te = student.logits.float(), teacher.logits.float()
        gt = F.one_hot(target, s.shape[-1]).bool()
        target_part = -(F.softmax(te, -1)[gt] * F.log_softmax(s, -1)[gt]).mean()
        t = self.params.temperature
        log_q_s = F.log_softmax(s / t - NON_TARGET * gt, dim=-1)
        q_t = F.softmax(te / t - NON_TARGET * gt, dim=-1)
        non_target = -(q_t * log_q_s).sum(-1).mean() * t * t
        return target_part + self.params.gamma * non_target
