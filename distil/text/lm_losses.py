"""Language-model losses: the student's own next-token loss, and two cross-tokenizer divergences.

Cross-tokenizer terms read the teacher's distribution over its own vocabulary at the student positions that
distil.text.align paired with a teacher position (`Outputs.features["aligned"]`, 1 where a pair exists):
- `uld`: Universal Logit Distillation, the Wasserstein-1 distance between the two distributions with their
  probabilities sorted (so no token needs a counterpart).
- `gold`: GOLD's hybrid: tokens spelled the same in both vocabularies are compared one to one (a KL over them),
  the rest by ULD's sorted distance. The pairs of same-spelled tokens are set with `set_vocab_map`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor

from distil.methods.base import Method, Outputs, register
from distil.methods.sequence import IGNORE, SequenceParams, masked_mean, token_mask

ALIGNED = "aligned"  # the teacher-outputs feature that marks the student positions with a teacher counterpart


@register("lm_ce")
class LMCE(Method):
    """Next-token cross-entropy over the real (target != -100) positions: a language model's label loss."""

    paper = "-"
    needs_teacher = False

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        logits = student.logits.float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE)


def sorted_distance(p_t: Tensor, p_s: Tensor) -> Tensor:
    """Per-position L1 distance between two probability vectors sorted in decreasing order (zero-padded to the
    longer one): the Wasserstein-1 distance ULD uses between distributions over different vocabularies."""
    width = max(p_t.shape[-1], p_s.shape[-1])
    t = F.pad(p_t.sort(-1, descending=True).values, (0, width - p_t.shape[-1]))
    s = F.pad(p_s.sort(-1, descending=True).values, (0, width - p_s.shape[-1]))
    return (t - s).abs().sum(-1)


class CrossTokenizerDivergence(Method):
    """A divergence between distributions over two vocabularies, at the aligned positions."""

    Params = SequenceParams

    def divergence(self, p_t: Tensor, p_s: Tensor) -> Tensor:  # pragma: no cover
        """Per-position divergence between teacher and student probabilities."""
        raise NotImplementedError

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        t = self.params.temperature
        p_s = F.softmax(student.logits.float() / t, dim=-1)
        p_t = F.softmax(teacher.logits.float() / t, dim=-1)
        mask = token_mask(student.logits, target)
        if ALIGNED in teacher.features:
            mask = mask * teacher.features[ALIGNED].float()
        return masked_mean(self.divergence(p_t, p_s), mask) * t * t


@register("uld")
class ULD(CrossTokenizerDivergence):
    """Universal Logit Distillation: sorted-probability Wasserstein-1 between teacher and student distributions;
    works for any two tokenizers (and for one)."""

    paper = "Boizard et al. Towards Cross-Tokenizer Distillation: the Universal Logit Distillation Loss for LLMs. 2024"

    def divergence(self, p_t: Tensor, p_s: Tensor) -> Tensor:
        """W1 between the sorted distributions."""
        return sorted_distance(p_t, p_s)


class GOLDParams(SequenceParams):
    """Weight of the matched-token KL against the sorted distance of the rest."""

    matched_weight: float = Field(1.0, ge=0, description="weight of the KL over tokens spelled alike in both "
                                  "vocabularies; the unmatched rest always has weight 1")


@register("gold")
class GOLD(CrossTokenizerDivergence):
    """GOLD's hybrid: tokens spelled the same in both vocabularies are matched one to one (a KL over them), the
    unmatched rest of each distribution is compared sorted, as ULD does."""

    paper = "Patiño et al. (Hugging Face TRL). GOLD: General On-policy Logit Distillation. 2025; Boizard et al. 2024"
    Params = GOLDParams

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.register_buffer("teacher_ids", torch.zeros(0, dtype=torch.long), persistent=False)
        self.register_buffer("student_ids", torch.zeros(0, dtype=torch.long), persistent=False)

    def set_vocab_map(self, teacher_ids: Tensor, student_ids: Tensor) -> None:
        """The pairs of token ids (teacher, student) that spell the same text (distil.text.align.vocab_map)."""
        self.teacher_ids = teacher_ids.long().to(self.teacher_ids.device)
        self.student_ids = student_ids.long().to(self.student_ids.device)

    def divergence(self, p_t: Tensor, p_s: Tensor) -> Tensor:
        """Generalized KL over the matched tokens + sorted L1 over the unmatched ones."""
        t_ids, s_ids = self.teacher_ids.to(p_t.device), self.student_ids.to(p_s.device)
        m_t, m_s = p_t[..., t_ids], p_s[..., s_ids]
        matched = (m_t * (m_t.clamp_min(1e-12).log() - m_s.clamp_min(1e-12).log()) - m_t + m_s).sum(-1)
        rest_t, rest_s = p_t.clone(), p_s.clone()
        rest_t[..., t_ids] = 0
        rest_s[..., s_ids] = 0
        return self.params.matched_weight * matched + sorted_distance(rest_t, rest_s)
