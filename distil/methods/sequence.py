"""Divergences between next-token distributions, for language models (and any logits): forward and reverse KL,
generalized JSD, skew KLs and total variation.

Logits are (B, L, V) per token or (B, V) per sample. The padding mask comes from the target: positions whose target
is -100 (padding, prompt, the last token; see distil.text.causal) do not count. Any other target, or a target shaped
unlike the logits' leading axes (class labels of a classifier), counts every position. Each loss is the mean over
the counted positions of a per-position divergence at temperature T, scaled by T^2 as KD is.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from distil.methods.base import Method, Outputs, register

IGNORE = -100


def token_mask(logits: Tensor, target: Tensor) -> Tensor:
    """1.0 where a position counts, 0.0 where its target is -100; shaped like the logits without their last axis."""
    if target.shape == logits.shape[:-1]:
        return (target != IGNORE).float()
    return torch.ones(logits.shape[:-1], device=logits.device)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` over the positions where `mask` is 1 (0 when none is)."""
    return (values * mask).sum() / mask.sum().clamp_min(1)


def kl(log_p: Tensor, log_q: Tensor) -> Tensor:
    """KL(p || q) along the last axis, from log-probabilities."""
    return (log_p.exp() * (log_p - log_q)).sum(-1)


def log_mix(log_p: Tensor, log_q: Tensor, weight: float) -> Tensor:
    """log(weight * p + (1 - weight) * q), computed in log space."""
    return torch.logaddexp(log_p + math.log(weight), log_q + math.log1p(-weight))


class SequenceParams(BaseModel):
    """The softmax temperature of a sequence divergence."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(1.0, gt=0, description="softmax temperature T; the loss is scaled by T^2")


class JSDParams(SequenceParams):
    """The generalized JSD's interpolation weight."""

    beta: float = Field(0.5, gt=0, lt=1, description="mixture weight of the teacher; 0.5 is the symmetric JSD")


class SkewParams(SequenceParams):
    """The skew KLs' mixing weight."""

    alpha: float = Field(0.1, ge=0, lt=1, description="weight of the first distribution in the skewed mixture "
                         "(0 gives plain KL; DistiLLM uses 0.1)")


class Divergence(Method):
    """A divergence between teacher and student next-token distributions, averaged over the unmasked positions."""

    Params = SequenceParams

    def divergence(self, log_p_t: Tensor, log_p_s: Tensor) -> Tensor:  # pragma: no cover
        """Per-position divergence from log-probabilities of the teacher and the student."""
        raise NotImplementedError

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        t = self.params.temperature
        log_p_s = F.log_softmax(student.logits.float() / t, dim=-1)
        log_p_t = F.log_softmax(teacher.logits.float() / t, dim=-1)
        return masked_mean(self.divergence(log_p_t, log_p_s), token_mask(student.logits, target)) * t * t


@register("fkl")
class ForwardKL(Divergence):
    """Forward KL(teacher || student) per token: mean-seeking, the student covers all the teacher's modes."""

    paper = "Hinton, Vinyals, Dean. Distilling the Knowledge in a Neural Network. 2015; Kim, Rush. Sequence-Level "\
            "Knowledge Distillation. EMNLP 2016"

    def divergence(self, log_p_t: Tensor, log_p_s: Tensor) -> Tensor:
        """KL(p_t || p_s)."""
        return kl(log_p_t, log_p_s)


@register("rkl")
class ReverseKL(Divergence):
    """Reverse KL(student || teacher) per token: mode-seeking, the student concentrates on the teacher's modes."""

    paper = "Gu, Dong, Wei, Huang. MiniLLM: Knowledge Distillation of Large Language Models. ICLR 2024"

    def divergence(self, log_p_t: Tensor, log_p_s: Tensor) -> Tensor:
        """KL(p_s || p_t)."""
        return kl(log_p_s, log_p_t)


@register("jsd")
class GeneralizedJSD(Divergence):
    """Generalized Jensen-Shannon divergence with weight beta: bounded, between forward and reverse KL.

    beta KL(p_t || m) + (1 - beta) KL(p_s || m) with m = beta p_t + (1 - beta) p_s; beta = 0.5 is the JSD."""

    paper = "Agarwal et al. On-Policy Distillation of Language Models: Learning from Self-Generated Mistakes (GKD). "\
            "ICLR 2024"
    Params = JSDParams

    def divergence(self, log_p_t: Tensor, log_p_s: Tensor) -> Tensor:
        """JSD_beta(p_t || p_s)."""
        beta = self.params.beta
        log_m = log_mix(log_p_t, log_p_s, beta)
        return beta * kl(log_p_t, log_m) + (1 - beta) * kl(log_p_s, log_m)


@register("skew_fkl")
class SkewForwardKL(Divergence):
    """Skew forward KL: KL(p_t || alpha p_t + (1 - alpha) p_s), stable where the student gives a token no mass.

    A true KL (zero at equality); DistiLLM's code drops the teacher's entropy, which changes no gradient."""

    paper = "Ko, Kim, Chen, Yun. DistiLLM: Towards Streamlined Distillation for Large Language Models. ICML 2024"
    Params = SkewParams

    def divergence(self, log_p_t: Tensor, log_p_s: Tensor) -> Tensor:
        """SKL_alpha(p_t, p_s)."""
        return kl(log_p_t, log_mix(log_p_t, log_p_s, self.params.alpha) if self.params.alpha else log_p_s)


@register("skew_rkl")
class SkewReverseKL(Divergence):
    """Skew reverse KL: KL(p_s || alpha p_s + (1 - alpha) p_t)."""

    paper = "Ko, Kim, Chen, Yun. DistiLLM: Towards Streamlined Distillation for Large Language Models. ICML 2024"
    Params = SkewParams

    def divergence(self, log_p_t: Tensor, log_p_s: Tensor) -> Tensor:
        """SRKL_alpha(p_s, p_t)."""
        return kl(log_p_s, log_mix(log_p_s, log_p_t, self.params.alpha) if self.params.alpha else log_p_t)


@register("tvd")
class TotalVariation(Divergence):
    """Total variation distance per token: half the L1 distance between the two distributions (bounded by 1)."""

    paper = "Wen, Li, Du, Mou. f-Divergence Minimization for Sequence-Level Knowledge Distillation. ACL 2023"

    def divergence(self, log_p_t: Tensor, log_p_s: Tensor) -> Tensor:
        """TVD(p_t, p_s)."""
        return 0.5 * (log_p_t.exp() - log_p_s.exp()).abs().sum(-1)
