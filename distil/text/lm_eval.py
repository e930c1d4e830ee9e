"""What a causal LM is worth on held-out text: perplexity, bits per character (comparable across tokenizers),
next-token accuracy, agreement of its top-1 token with the teacher's, generation speed, parameters and bytes."""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F

from distil.text.causal import CausalLM
from distil.text.tokenize import IGNORE, TextDataset


def _characters(dataset: TextDataset, index: torch.Tensor, targets: torch.Tensor) -> int:
    """Characters the scored tokens cover: from the first predicted token's start to the last one's end."""
    spans = dataset.spans[index, 1:targets.shape[1] + 1].long()
    scored = targets[:, :spans.shape[1]] != IGNORE
    starts = spans[..., 0].masked_fill(~scored, 1 << 30).amin(1)
    ends = spans[..., 1].masked_fill(~scored, -1).amax(1)
    return int((ends - starts).clamp_min(0).sum())


@torch.no_grad()
def score_lm(model: CausalLM, dataset: TextDataset, device: torch.device, teacher: CausalLM | None = None,
             batch_size: int = 32) -> dict[str, float]:
    """Perplexity, bits per character and next-token accuracy over the scored tokens of `dataset`; with a teacher
    of the same tokenizer, how often the two models' top-1 tokens agree."""
    model.eval().to(device)
    nll = correct = agree = tokens = chars = 0.0
    for start in range(0, len(dataset), batch_size):
        index = torch.arange(start, min(start + batch_size, len(dataset)))
        batch = dataset.batch(index).to(device)
        logits = model(batch.x).float()
        mask = batch.y != IGNORE
        nll += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.y.reshape(-1), ignore_index=IGNORE,
                               reduction="sum").item()
        top = logits.argmax(-1)
        correct += int(((top == batch.y) & mask).sum())
        if teacher is not None:
            agree += int(((teacher(batch.x).argmax(-1) == top) & mask).sum())
        tokens += int(mask.sum())
        chars += _characters(dataset, index, batch.y.cpu())
    out = {"perplexity": math.exp(nll / max(1, tokens)), "bits_per_char": nll / math.log(2) / max(1, chars),
           "next_token_acc": correct / max(1, tokens), "scored_tokens": int(tokens), "scored_chars": int(chars)}
    if teacher is not None:
        out["agreement"] = agree / max(1, tokens)
    return out


@torch.no_grad()
def generation_speed(model: CausalLM, dataset: TextDataset, device: torch.device, new_tokens: int,
                     prompts: int = 8, prompt_tokens: int = 4, repeats: int = 3) -> float:
    """Tokens per second of greedy generation (with the KV cache), `prompts` prompts at once; median of repeats."""
    model.eval().to(device)
    ids = dataset.x[:prompts, :prompt_tokens].to(device)
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  pad_token_id=model.tokenizer.pad_token_id, attention_mask=torch.ones_like(ids))
    model.hf.generate(ids, **{**kwargs, "max_new_tokens": 2, "min_new_tokens": 2})  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        model.hf.generate(ids, **kwargs)
        times.append(time.perf_counter() - started)
    return len(ids) * new_tokens / sorted(times)[len(times) // 2]


def size_of(model: CausalLM) -> dict[str, int]:
    """Parameters (tied embeddings counted once) and their bytes."""
    params = {id(p): p for p in model.parameters()}.values()
    return {"params": sum(p.numel() for p in params), "bytes": sum(p.numel() * p.element_size() for p in params)}
