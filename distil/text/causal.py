"""Token-level distillation between Hugging Face causal language models that share a tokenizer.

The student learns the teacher's next-token distribution at every real position with a sequence divergence from
the method registry (`fkl`, `rkl`, `jsd`, `skew_fkl`, `skew_rkl`, `tvd`); targets are next-token ids with -100 at
padding and prompt positions, so neither counts. The teacher runs live, or once into a top-k cache
(`TokenCache`: the k largest log-probabilities per token and the remaining mass); on-policy mode (GKD) lets the
student continue the prompts itself and learns the teacher's distribution on its own samples.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distil.batch import Batch, TensorDict
from distil.cache import topk_to_logprobs
from distil.checkpoint import atomic_write_text
from distil.engine import Fit, resolve_device, seed_everything
from distil.errors import DistilError
from distil.methods.base import Method, Outputs, method_class, register
from distil.methods.objective import Objective
from distil.recipe import TrainConfig
from distil.teachers import LiveTeacher, TeacherSource
from distil.text.tokenize import IGNORE, TextDataset, load_tokenizer, pad_ids, transformers_module


@register("lm_ce")
class LMCE(Method):
    """Next-token cross-entropy over the real (target != -100) positions: a language model's label loss."""

    paper = "-"
    needs_teacher = False

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        logits = student.logits.float()
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=IGNORE)


class CausalLM(nn.Module):
    """A Hugging Face causal LM behind `model(x)` -> (B, T, vocab) logits; keeps its tokenizer for checks."""

    def __init__(self, model: nn.Module, tokenizer=None) -> None:
        super().__init__()
        self.hf = model
        self.tokenizer = tokenizer

    @property
    def vocab_size(self) -> int:
        """Rows of the output layer: the size of the distribution at each position."""
        return self.hf.get_output_embeddings().weight.shape[0]

    def forward(self, x: Tensor | dict) -> Tensor:
        """Next-token logits at every position."""
        if isinstance(x, dict):
            return self.hf(input_ids=x["input_ids"], attention_mask=x["attention_mask"]).logits
        return self.hf(input_ids=x.long()).logits


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


def check_same_tokenizer(teacher: CausalLM, student: CausalLM) -> None:
    """Refuse a pair whose vocabularies differ: token-level losses compare distributions over the same tokens."""
    if teacher.vocab_size != student.vocab_size:
        raise DistilError(f"the teacher's vocabulary has {teacher.vocab_size} tokens and the student's "
                          f"{student.vocab_size}; token-level distillation needs a student with the teacher's "
                          "tokenizer (build it from the teacher's folder).")
    if teacher.tokenizer is None or student.tokenizer is None:
        return
    t_vocab, s_vocab = teacher.tokenizer.get_vocab(), student.tokenizer.get_vocab()
    if t_vocab != s_vocab:
        diff = sorted(set(t_vocab.items()) ^ set(s_vocab.items()))[:3]
        raise DistilError(f"the teacher and student tokenizers differ (e.g. {diff}); token-level distillation needs "
                          "one tokenizer: give the student the teacher's tokenizer.")
    special = ("bos_token_id", "eos_token_id", "pad_token_id")
    t_special = [getattr(teacher.tokenizer, k) for k in special]
    s_special = [getattr(student.tokenizer, k) for k in special]
    if t_special != s_special:
        raise DistilError(f"the teacher's special tokens {dict(zip(special, t_special))} differ from the student's "
                          f"{dict(zip(special, s_special))}; give the student the teacher's tokenizer.")


def next_token_targets(ids: Tensor, lengths: Tensor, prompt_lengths: Tensor | None = None) -> Tensor:
    """Targets for (N, T) ids: position t predicts token t+1; padding, the last token and the prompt are -100."""
    targets = torch.full_like(ids, IGNORE)
    targets[:, :-1] = ids[:, 1:]
    position = torch.arange(ids.shape[1])[None, :]
    keep = position + 1 < lengths[:, None]
    if prompt_lengths is not None:
        keep &= position + 1 >= prompt_lengths[:, None]
    return targets.masked_fill(~keep, IGNORE)


def lm_dataset(tokenizer, texts: Sequence[str], max_length: int, prompts: Sequence[str] | None = None,
               bucket: bool = True) -> TextDataset:
    """One sample per text (after its prompt, whose tokens are context only), truncated to `max_length` tokens."""
    ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    prompt_ids = tokenizer(list(prompts), add_special_tokens=False)["input_ids"] if prompts is not None else None
    if prompt_ids is not None and len(prompt_ids) != len(ids):
        raise DistilError(f"lm_dataset: {len(prompt_ids)} prompts for {len(ids)} texts; give one prompt per text.")
    sequences = [((prompt_ids[i] if prompt_ids else []) + t)[:max_length] for i, t in enumerate(ids)]
    padded, lengths = pad_ids(sequences, tokenizer.pad_token_id)
    prompt_lengths = torch.tensor([len(p) for p in prompt_ids]) if prompt_ids else None
    return TextDataset(padded, next_token_targets(padded, lengths, prompt_lengths), lengths,
                       tokenizer.pad_token_id, bucket)


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


@dataclass
class CacheInfo:
    """What a token cache holds: samples, positions per sample, k and the vocabulary size."""

    fingerprint: str
    samples: int
    length: int
    topk: int
    vocab: int


class TokenCache:
    """Top-k teacher log-probabilities of every token of a dataset, memory-mapped from a folder (a TeacherSource)."""

    def __init__(self, folder: Path, info: CacheInfo) -> None:
        self.folder, self.info = Path(folder), info
        self.arrays = {n: np.load(self.folder / f"{n}.npy", mmap_mode="r") for n in ("topk_logp", "topk_index",
                                                                                     "rest_mass")}

    def outputs(self, batch: Batch) -> Outputs:
        """Full log-probabilities rebuilt from the top-k (the rest spread evenly) for the batch's samples."""
        rows = batch.index.cpu().numpy()
        width = batch.y.shape[1]
        device = batch.y.device

        def take(name: str) -> Tensor:
            return torch.from_numpy(np.asarray(self.arrays[name][rows, :width])).to(device)

        logp = topk_to_logprobs(take("topk_logp").float(), take("topk_index").long(), take("rest_mass").float(),
                                self.info.vocab)
        return Outputs(logp)


def _fingerprint(teacher: nn.Module, dataset: TextDataset, topk: int) -> str:
    digest = hashlib.sha256()
    for name, tensor in teacher.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    for tensor in (dataset.x, dataset.y, dataset.lengths):
        digest.update(tensor.contiguous().numpy().tobytes())
    digest.update(str(topk).encode())
    return digest.hexdigest()


@torch.no_grad()
def build_token_cache(teacher: CausalLM, dataset: TextDataset, folder: str | Path, topk: int, *,
                      device: str | torch.device = "cpu", batch_size: int = 32) -> TokenCache:
    """Run the teacher once over `dataset` and keep the top-k log-probabilities per token; reused when unchanged."""
    folder, device = Path(folder), torch.device(device)
    vocab = teacher.vocab_size
    if not 1 <= topk < vocab:
        raise DistilError(f"topk: {topk} must be between 1 and the vocabulary size {vocab} minus one.")
    stamp = _fingerprint(teacher, dataset, topk)
    manifest = folder / "manifest.json"
    if manifest.is_file():
        info = CacheInfo(**json.loads(manifest.read_text(encoding="utf-8")))
        if info.fingerprint == stamp:
            return TokenCache(folder, info)
    n, length = dataset.x.shape
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    logp_a = np.lib.format.open_memmap(tmp / "topk_logp.npy", mode="w+", dtype=np.float16, shape=(n, length, topk))
    index_a = np.lib.format.open_memmap(tmp / "topk_index.npy", mode="w+", dtype=np.int32, shape=(n, length, topk))
    rest_a = np.lib.format.open_memmap(tmp / "rest_mass.npy", mode="w+", dtype=np.float32, shape=(n, length))
    teacher = teacher.to(device).eval()
    for start in range(0, n, batch_size):
        index = torch.arange(start, min(start + batch_size, n))
        x = TensorDict(input_ids=dataset.x[index], attention_mask=(torch.arange(length)[None, :]
                                                                    < dataset.lengths[index][:, None]).long())
        logp = torch.log_softmax(teacher(x.to(device)).float(), dim=-1)
        values, top = logp.topk(topk, dim=-1)
        logp_a[start:start + len(index)] = values.cpu().numpy().astype(np.float16)
        index_a[start:start + len(index)] = top.cpu().numpy().astype(np.int32)
        rest_a[start:start + len(index)] = (1 - values.exp().sum(-1)).clamp_min(0).cpu().numpy()
    for array in (logp_a, index_a, rest_a):
        array.flush()
    info = CacheInfo(stamp, n, length, topk, vocab)
    atomic_write_text(tmp / "manifest.json", json.dumps(info.__dict__))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)  # the finished cache appears whole, or not at all
    return TokenCache(folder, info)


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
    check_same_tokenizer(teacher, student)
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
