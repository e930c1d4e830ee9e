"""Which positions of two tokenizations of the same text predict the same thing, from character offsets.

Position t of a causal LM predicts token t+1. A student position and a teacher position correspond when the
tokens they predict start at the same character of the text: both models then predict what comes at that
character, each over its own vocabulary. Spans come from the fast tokenizers' offset mappings, so any pair of
Hugging Face tokenizers aligns; `AlignedTeacher` serves the teacher's distribution (live, or from the token cache
without running the teacher) at the student's positions, with a mask of the positions that have a counterpart.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from distil.batch import Batch
from distil.cache import TeacherCache, topk_to_logprobs
from distil.methods.base import Outputs
from distil.teachers import LiveTeacher
from distil.text.lm_losses import ALIGNED
from distil.text.tokenize import IGNORE, TextDataset

NO_SPAN = -1  # the span of padding: matches nothing


def predicted_starts(spans: Tensor, valid: Tensor | None = None) -> Tensor:
    """(B, T) first character of the token each position predicts (token t+1); NO_SPAN where there is none, where
    that token covers no text (special tokens) or where `valid` is False."""
    starts = torch.full(spans.shape[:2], NO_SPAN, dtype=torch.long, device=spans.device)
    nxt = spans[:, 1:]
    real = nxt[..., 1] > nxt[..., 0]
    starts[:, :-1] = torch.where(real, nxt[..., 0].long(), torch.full_like(nxt[..., 0].long(), NO_SPAN))
    if valid is not None:
        starts = starts.masked_fill(~valid, NO_SPAN)
    return starts


def pair_positions(student_starts: Tensor, teacher_starts: Tensor) -> tuple[Tensor, Tensor]:
    """For each student position, the first teacher position predicting a token that starts at the same character,
    and whether there is one: (B, Ls) long indices into the teacher's positions, (B, Ls) bool."""
    same = (student_starts[:, :, None] == teacher_starts[:, None, :]) & (student_starts[:, :, None] >= 0)
    return same.float().argmax(-1), same.any(-1)


def _surface(tokenizer, token: str) -> tuple[bool, str]:
    """(starts a word, its text) of one vocabulary entry, whatever the tokenizer's convention (## or a space)."""
    prefix = getattr(tokenizer.backend_tokenizer.model, "continuing_subword_prefix", None)
    if prefix and isinstance(prefix, str) and not hasattr(tokenizer.backend_tokenizer.model, "merges"):
        return (False, token[len(prefix):]) if token.startswith(prefix) else (True, token)
    text = tokenizer.convert_tokens_to_string([token])
    return text.startswith(" "), text.strip()


def vocab_map(teacher_tokenizer, student_tokenizer) -> tuple[Tensor, Tensor]:
    """Pairs of (teacher id, student id) spelling the same text (same word-start flag, same characters); special
    tokens are left out. GOLD compares these one to one."""
    def spelled(tokenizer) -> dict[tuple[bool, str], int]:
        special = set(tokenizer.all_special_ids)
        out: dict[tuple[bool, str], int] = {}
        for token, i in sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1]):
            key = _surface(tokenizer, token)
            if i not in special and key[1] and key not in out:
                out[key] = i
        return out

    t, s = spelled(teacher_tokenizer), spelled(student_tokenizer)
    shared = sorted(set(t) & set(s))
    return torch.tensor([t[k] for k in shared], dtype=torch.long), torch.tensor([s[k] for k in shared],
                                                                                 dtype=torch.long)


class AlignedTeacher:
    """Teacher outputs for batches of the student's tokenization: the teacher's log-probabilities (its own
    vocabulary) at each student position paired by character with a teacher position, and the pairing mask."""

    def __init__(self, student: TextDataset, teacher_spans: Callable[[Tensor], Tensor],
                 teacher_logprobs: Callable[[Tensor, Tensor, torch.device], Tensor]) -> None:
        self.student = student
        self.teacher_spans = teacher_spans
        self.teacher_logprobs = teacher_logprobs

    def outputs(self, batch: Batch) -> Outputs:
        """(B, Ls, V_teacher) log-probabilities and features[aligned] (B, Ls) for the student's batch."""
        index = batch.index.cpu()
        width = batch.y.shape[1]
        valid = (batch.y != IGNORE).cpu()
        s_starts = predicted_starts(self.student.spans[index, :width], valid)
        at, aligned = pair_positions(s_starts, predicted_starts(self.teacher_spans(index)))
        logp = self.teacher_logprobs(index, at, batch.y.device)
        return Outputs(logp, {ALIGNED: aligned.float().to(batch.y.device)})


def cached_alignment(student: TextDataset, cache: TeacherCache) -> AlignedTeacher:
    """Read the teacher's top-k from its token cache at the student's positions; the teacher never runs."""
    def logprobs(index: Tensor, at: Tensor, device: torch.device) -> Tensor:
        logp, ids, rest = cache.topk(index, torch.device("cpu"))
        pick = at[..., None].expand(-1, -1, logp.shape[-1])
        logp, ids = logp.gather(1, pick), ids.gather(1, pick)
        rest = rest.gather(1, at)
        return topk_to_logprobs(logp, ids, rest, cache.layout.classes).to(device)

    return AlignedTeacher(student, lambda index: cache.spans(index), logprobs)


def live_alignment(student: TextDataset, teacher: nn.Module, teacher_data: TextDataset) -> AlignedTeacher:
    """Run the teacher on its own tokenization of the batch's samples and read it at the student's positions."""
    live = LiveTeacher(teacher)

    def logprobs(index: Tensor, at: Tensor, device: torch.device) -> Tensor:
        t_batch = teacher_data.batch(index).to(device)
        logp = torch.log_softmax(live.outputs(t_batch).logits.float(), -1)
        return logp.gather(1, at.to(device)[..., None].expand(-1, -1, logp.shape[-1]))

    return AlignedTeacher(student, lambda index: teacher_data.spans[index, :int(teacher_data.lengths[index].max())],
                          logprobs)
