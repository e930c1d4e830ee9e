"""Token-level distillation between Hugging Face causal language models that share a tokenizer.

The student learns the teacher's next-token distribution at every real position with a sequence divergence from
the method registry (`fkl`, `rkl`, `jsd`, `skew_fkl`, `skew_rkl`, `tvd`); targets are next-token ids with -100 at
padding and prompt positions, so neither counts. The teacher runs live, or once into distil's teacher cache
(distil.cache: the k largest log-probabilities per token, the remaining mass and the character span of each token,
so a student with another tokenizer reads the same cache through distil.text.align); on-policy mode (GKD) lets the
student continue the prompts itself and learns the teacher's distribution on its own samples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distil.batch import Batch, TensorDict
from distil.cache import CacheBuilder, TeacherCache, fingerprint, open_cache
from distil.engine import Fit, resolve_device, seed_everything
from distil.errors import DistilError
from distil.methods.base import Method, method_class
from distil.methods.objective import Objective
from distil.recipe import CacheConfig, TrainConfig
from distil.teachers import LiveTeacher, TeacherSource
from distil.text.lm_losses import LMCE
from distil.text.tokenize import (
    IGNORE,
    TextDataset,
    load_tokenizer,
    pad_ids,
    tokenizer_difference,
    tokenizer_identity,
    tokenizer_tokens,
    transformers_module,
)

CROSS_TOKENIZER_LOSSES = ("uld", "gold")


class CausalLM(nn.Module):
    """A Hugging Face causal LM behind `model(x)` -> (B, T, vocab) logits; keeps its tokenizer for checks.

    `vocab_limit` cuts the output to the tokenizer's tokens when the embedding matrix has padding rows beyond them
    (set by `reconcile_vocab`)."""

    def __init__(self, model: nn.Module, tokenizer=None) -> None:
        super().__init__()
        self.hf = model
        self.tokenizer = tokenizer
        self.vocab_limit: int | None = None

    @property
    def vocab_size(self) -> int:
        """Size of the distribution at each position: output rows, or `vocab_limit` when set."""
        return self.vocab_limit or self.hf.get_output_embeddings().weight.shape[0]

    def forward(self, x: Tensor | dict) -> Tensor:
        """Next-token logits at every position."""
        if isinstance(x, dict):
            logits = self.hf(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).logits
        else:
            logits = self.hf(input_ids=x.long()).logits
        return logits if self.vocab_limit is None else logits[..., :self.vocab_limit]


def load_causal_lm(folder: str | Path) -> CausalLM:
    """The causal LM and tokenizer saved in a local Hugging Face folder (nothing is downloaded)."""
    path = Path(folder).expanduser()
    tokenizer = load_tokenizer(path, field=f"causal LM {path}")
    transformers = transformers_module()
    try:
        model = transformers.AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise DistilError(f"causal LM {path}: no model could be loaded ({type(exc).__name__}); give a folder with "
                          "config.json and the weights of a Hugging Face causal LM.") from None
    return CausalLM(model, tokenizer)


def same_tokenizer(teacher: CausalLM, student: CausalLM) -> bool:
    """Whether both models read the same tokens (same vocabulary and special tokens; unknown counts as same)."""
    if teacher.tokenizer is None or student.tokenizer is None:
        return True
    return tokenizer_tokens(teacher.tokenizer) == tokenizer_tokens(student.tokenizer)


def reconcile_vocab(teacher: CausalLM, student: CausalLM) -> None:
    """Make two models with one tokenizer compare distributions over the same tokens: output layers padded beyond
    the tokenizer (e.g. 152064 vs 151936 rows) are cut to the tokenizer's size; any other difference is refused,
    naming both tokenizers and the way out."""
    if not same_tokenizer(teacher, student):
        t, s = tokenizer_identity(teacher.tokenizer), tokenizer_identity(student.tokenizer)
        how = tokenizer_difference(teacher.tokenizer, student.tokenizer)
        raise DistilError(f"the teacher and student tokenizers differ (teacher: {t}; student: {s}: {how}); token-level "
                          "losses need one tokenizer: give the student the teacher's tokenizer, or use a "
                          f"cross-tokenizer loss ({' / '.join(CROSS_TOKENIZER_LOSSES)}) in distill.losses.")
    if teacher.vocab_size == student.vocab_size:
        return
    size = len(teacher.tokenizer) if teacher.tokenizer is not None else None
    if size is None or min(teacher.vocab_size, student.vocab_size) < size:
        raise DistilError(f"the teacher's vocabulary has {teacher.vocab_size} tokens and the student's "
                          f"{student.vocab_size}, and no tokenizer says which rows are padding; give both models "
                          "their tokenizer (build the student from the teacher's folder).")
    teacher.vocab_limit = student.vocab_limit = size  # rows beyond the tokenizer are never a real token


def next_token_targets(ids: Tensor, lengths: Tensor, prompt_lengths: Tensor | None = None) -> Tensor:
    """Targets for (N, T) ids: position t predicts token t+1; padding, the last token and the prompt are -100."""
    targets = torch.full_like(ids, IGNORE)
    targets[:, :-1] = ids[:, 1:]
    position = torch.arange(ids.shape[1])[None, :]
    keep = position + 1 < lengths[:, None]
    if prompt_lengths is not None:
        keep &= position + 1 >= prompt_lengths[:, None]
    return targets.masked_fill(~keep, IGNORE)


def start_token(tokenizer) -> int | None:
    """The token that starts a text (bos, else cls, else eos), so that the first real token is predicted too."""
    for name in ("bos_token_id", "cls_token_id", "eos_token_id"):
        if getattr(tokenizer, name, None) is not None:
            return getattr(tokenizer, name)
    return None


def _tokens(tokenizer, texts: Sequence[str]) -> tuple[list[list[int]], list[list[tuple[int, int]]]]:
    out = tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True)
    return out["input_ids"], [[tuple(o) for o in offsets] for offsets in out["offset_mapping"]]


def lm_dataset(tokenizer, texts: Sequence[str], max_length: int, prompts: Sequence[str] | None = None,
               bucket: bool = True, bos: bool = False) -> TextDataset:
    """One sample per text (after its prompt, whose tokens are context only), truncated to `max_length` tokens.

    The dataset keeps each token's character span in prompt + text (`spans`, -1 at padding) for cross-tokenizer
    alignment; `bos` starts each sample with the tokenizer's start token so the first word is predicted too."""
    if prompts is not None and len(prompts) != len(texts):
        raise DistilError(f"lm_dataset: {len(prompts)} prompts for {len(texts)} texts; give one prompt per text.")
    prompts = list(prompts) if prompts is not None else [""] * len(texts)
    ids, offsets = _tokens(tokenizer, texts)
    p_ids, p_offsets = _tokens(tokenizer, prompts)
    first = start_token(tokenizer) if bos else None
    head = ([first], [(0, 0)]) if first is not None else ([], [])
    sequences, spans, prompt_lengths = [], [], []
    for i, prompt in enumerate(prompts):
        shift = len(prompt)
        seq = head[0] + p_ids[i] + ids[i]
        span = head[1] + p_offsets[i] + [(a + shift, b + shift) for a, b in offsets[i]]
        sequences.append(seq[:max_length])
        spans.append(span[:max_length])
        prompt_lengths.append(len(head[0]) + len(p_ids[i]))
    padded, lengths = pad_ids(sequences, tokenizer.pad_token_id)
    span_tensor = torch.full((*padded.shape, 2), -1, dtype=torch.int32)
    for i, span in enumerate(spans):
        if span:
            span_tensor[i, :len(span)] = torch.tensor(span, dtype=torch.int32)
    prompt_len = torch.tensor(prompt_lengths) if any(prompt_lengths) else None
    return TextDataset(padded, next_token_targets(padded, lengths, prompt_len), lengths, tokenizer.pad_token_id,
                       bucket, spans=span_tensor)


def split_long_texts(tokenizer, texts: Sequence[str], max_tokens: int) -> list[str]:
    """Texts of more than `max_tokens` tokens cut into pieces that fit, at the last word boundary that fits (at a
    token boundary inside a longer word); no text is lost."""
    _, offsets = _tokens(tokenizer, texts)
    out = []
    for text, spans in zip(texts, offsets):
        if len(spans) <= max_tokens:
            out.append(text)
            continue
        word_starts = {k for k, (a, _) in enumerate(spans) if a > 0 and text[a - 1].isspace()}
        cuts, first = [0], 0
        while len(spans) - first > max_tokens:
            first = next((k for k in range(first + max_tokens, first, -1) if k in word_starts), first + max_tokens)
            cuts.append(spans[first][0])
        pieces = [text[a:b].strip() for a, b in zip(cuts, cuts[1:] + [len(text)]) if text[a:b].strip()]
        out += split_long_texts(tokenizer, pieces, max_tokens) if len(pieces) > 1 else pieces
    return out


def pack_texts(tokenizers: Sequence, texts: Sequence[str], max_tokens: int, separator: str = "\n") -> list[str]:
    """Consecutive texts joined (by `separator`) into samples of at most about `max_tokens` tokens with each of
    `tokenizers` (packing)."""
    counts = [max(len(ids) + 1 for ids in per_text) for per_text in
              zip(*(_tokens(tokenizer, texts)[0] for tokenizer in tokenizers))]
    out, current, used = [], [], 0
    for text, n in zip(texts, counts):
        if current and used + n > max_tokens:
            out.append(separator.join(current))
            current, used = [], 0
        current.append(text)
        used += n
    if current:
        out.append(separator.join(current))
    return out


def lm_blocks(tokenizer, text: str, block_size: int) -> TextDataset:
    """A corpus cut into consecutive blocks of `block_size` tokens (the usual language-modelling samples)."""
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)
    n = len(ids) // block_size
    if n < 1:
        raise DistilError(f"lm_blocks: the corpus has {len(ids)} tokens, fewer than one block of {block_size}.")
    blocks = ids[:n * block_size].reshape(n, block_size)
    lengths = torch.full((n,), block_size, dtype=torch.long)
    return TextDataset(blocks, next_token_targets(blocks, lengths), lengths, tokenizer.pad_token_id, bucket=False)


@torch.no_grad()
def perplexity(model: nn.Module, dataset: TextDataset, device: str | torch.device = "cpu",
               batch_size: int = 32) -> float:
    """exp(mean next-token cross-entropy) over the real target positions of `dataset`."""
    device = torch.device(device)
    was_training = model.training
    model.eval().to(device)
    total, count = 0.0, 0
    for start in range(0, len(dataset), batch_size):
        batch = dataset.batch(torch.arange(start, min(start + batch_size, len(dataset)))).to(device)
        logits = model(batch.x).float()
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.y.reshape(-1), ignore_index=IGNORE,
                                 reduction="sum").item()
        count += int((batch.y != IGNORE).sum())
    model.train(was_training)
    return math.exp(total / max(1, count))


def token_cache_settings(teacher: CausalLM, cfg: CacheConfig) -> dict:
    """What shapes a token cache besides the teacher's weights and the data: its tokenizer, k and storage."""
    return {"kind": "tokens", "tokenizer": tokenizer_tokens(teacher.tokenizer) if teacher.tokenizer else None,
            "topk": cfg.topk, "dtype": cfg.dtype, "vocab": teacher.vocab_size}


@torch.no_grad()
def build_token_cache(teacher: CausalLM, dataset: TextDataset, folder: str | Path, topk: int | None, *,
                      device: str | torch.device = "cpu", batch_size: int = 32, dtype: str = "fp16",
                      quiet: bool = True) -> TeacherCache:
    """Run the teacher once over `dataset` into distil's teacher cache (distil.cache): the top-k log-probabilities
    per token, the rest's mass and the character spans of the tokens; reused (or resumed) when unchanged."""
    if topk is not None and not 1 <= topk < teacher.vocab_size:
        raise DistilError(f"cache.topk: {topk} must be between 1 and the vocabulary size {teacher.vocab_size} "
                          "minus one (or null for full logits).")
    cfg = CacheConfig(topk=topk, dtype=dtype, batch_size=batch_size)
    tokenizer = tokenizer_identity(teacher.tokenizer) if teacher.tokenizer is not None else None
    stamp = fingerprint(teacher, dataset, token_cache_settings(teacher, cfg))
    run_device = torch.device(device)
    CacheBuilder(Path(folder), LiveTeacher(teacher.to(run_device)), dataset, cfg, views=1, fingerprint=stamp,
                 device=run_device, quiet=quiet, tokenizer=tokenizer).build()
    return open_cache(Path(folder), stamp, verify=False, tokenizer=tokenizer, topk=topk)


@dataclass
class OnPolicyFit(Fit):
    """Fit whose batches are, with probability `on_policy`, the student's own continuations of the first
    `prompt_tokens` tokens (GKD): the teacher then scores what the student actually generates."""

    on_policy: float = 0.5
    prompt_tokens: int = 4
    temperature: float = 1.0

    def prepare_batch(self, batch: Batch, epoch: int) -> Batch:
        """The data batch, or (with probability `on_policy`) one continued by the student."""
        batch = super().prepare_batch(batch, epoch)
        if not hasattr(self, "_coin"):
            self._coin = torch.Generator().manual_seed(self.seed * 7_919 + 17)
        if torch.rand((), generator=self._coin).item() >= self.on_policy:
            return batch
        return self.student_batch(batch)

    @torch.no_grad()
    def student_batch(self, batch: Batch) -> Batch:
        """Keep each sample's first `prompt_tokens` tokens and let the student sample the rest of the width."""
        ids = batch.x["input_ids"]
        width, k = ids.shape[1], self.prompt_tokens
        if width <= k:
            return batch
        was_training = self.model.training
        self.model.eval()
        out = ids[:, :k]
        for _ in range(width - k):
            logits = self.model(TensorDict(input_ids=out, attention_mask=torch.ones_like(out)))[:, -1].float()
            probs = torch.softmax(logits / self.temperature, dim=-1)
            out = torch.cat([out, torch.multinomial(probs, 1, generator=self._sampler(out.device))], dim=1)
        self.model.train(was_training)
        lengths = torch.full((len(out),), width, device=out.device)
        prompt = torch.full_like(lengths, k)
        y = next_token_targets(out.cpu(), lengths.cpu(), prompt.cpu()).to(out.device)
        return Batch(batch.index, TensorDict(input_ids=out, attention_mask=torch.ones_like(out)), y, batch.view)

    def _sampler(self, device: torch.device) -> torch.Generator:
        if not hasattr(self, "_sample_gen"):
            self._sample_gen = torch.Generator(device=device).manual_seed(self.seed * 104_729 + 3)
        return self._sample_gen


def train_lm(model: nn.Module, train: TextDataset, *, epochs: int = 5, batch_size: int = 16, lr: float = 3e-3,
             seed: int = 0, device: str = "auto", quiet: bool = True) -> nn.Module:
    """Train a causal LM on its next-token labels (the teacher, or the student alone as the baseline)."""
    seed_everything(seed)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adamw", grad_clip=1.0)
    fit = Fit(stage="lm", model=model, objective=Objective([LMCE()]), train=train, val=None, cfg=cfg,
              device=resolve_device(device), seed=seed, quiet=quiet)
    return fit.run().model


def distill_lm(teacher: CausalLM, student: CausalLM, train: TextDataset, *, loss: str = "fkl",
               loss_params: dict | None = None, ce_weight: float = 0.0, epochs: int = 5, batch_size: int = 16,
               lr: float = 3e-3, seed: int = 0, device: str = "auto", topk: int | None = None,
               cache_dir: str | Path | None = None, on_policy: float = 0.0, prompt_tokens: int = 4,
               quiet: bool = True) -> nn.Module:
    """Distill `teacher` into `student` token by token with the sequence divergence `loss` (+ `ce_weight`·lm_ce).

    `topk` with `cache_dir` runs the teacher once and trains from its top-k log-probabilities; `on_policy` > 0
    trains that fraction of batches on the student's own continuations (needs the live teacher).
    """
    reconcile_vocab(teacher, student)
    run_device = resolve_device(device)
    if topk is not None and on_policy:
        raise DistilError("on_policy: the student's own samples need the live teacher; drop topk or on_policy.")
    if topk is not None:
        if cache_dir is None:
            raise DistilError("cache_dir: a top-k token cache needs a folder; give cache_dir.")
        source: TeacherSource = build_token_cache(teacher, train, cache_dir, topk, device=run_device)
    else:
        source = LiveTeacher(teacher.to(run_device))
    terms: list[Method] = [method_class(loss, field="loss")(weight=1.0, **(loss_params or {}))]
    if ce_weight:
        terms.append(LMCE(weight=ce_weight))
    seed_everything(seed)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, optimizer="adamw", grad_clip=1.0)
    common = dict(stage="distill_lm", model=student, objective=Objective(terms), train=train, val=None, cfg=cfg,
                  device=run_device, seed=seed, teacher=source, quiet=quiet)
    fit = OnPolicyFit(**common, on_policy=on_policy, prompt_tokens=prompt_tokens) if on_policy else Fit(**common)
    return fit.run().model
