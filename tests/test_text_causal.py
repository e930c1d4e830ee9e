"""Token-level distillation of causal LMs: masks, the top-k cache, on-policy batches, tokenizer checks, perplexity."""

from __future__ import annotations

import random

import pytest
import torch
from test_text_helpers import transformers, word_tokenizer
from threads import one_torch_thread

from distil.batch import Batch, TensorDict
from distil.errors import DistilError
from distil.methods.base import method_class
from distil.teachers import LiveTeacher
from distil.text.causal import (
    CausalLM,
    OnPolicyFit,
    build_token_cache,
    distill_lm,
    lm_dataset,
    next_token_targets,
    perplexity,
    reconcile_vocab,
    train_lm,
)
from distil.text.tokenize import IGNORE

SUBJECT = "the cat|a dog|the bird|my friend|the old man|a child".split("|")
VERB = "sees|likes|finds|wants|takes|eats".split("|")
OBJECT = "the ball|a fish|the red apple|some bread|the small box|a green hat".split("|")
END = "today|at home|in the park|every day|again|now".split("|")
WORDS = sorted({w for part in (SUBJECT, VERB, OBJECT, END) for phrase in part for w in phrase.split()} | {"."})

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models


def corpus(n: int, seed: int) -> list[str]:
    """Sentences of a small grammar whose verb depends on the subject and whose object depends on the verb."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s = rng.randrange(6)
        v = (s + rng.choice([0, 0, 1])) % 6
        o = (v + rng.choice([0, 1, 1, 2])) % 6
        out.append(f"{SUBJECT[s]} {VERB[v]} {OBJECT[o]} {END[rng.randrange(6)]} .")
    return out


TOKENIZER = word_tokenizer(WORDS, bert_style=False)


def gpt(layers: int, seed: int, tokenizer=TOKENIZER) -> CausalLM:
    """A from-scratch GPT-2 of `layers` layers, 32 wide."""
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_positions=32, n_embd=32, n_layer=layers, n_head=2,
                                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                     pad_token_id=tokenizer.pad_token_id)
    return CausalLM(transformers.GPT2LMHeadModel(config), tokenizer)


@pytest.fixture(scope="module")
def teacher() -> CausalLM:
    """A 2-layer teacher trained briefly on 800 sentences."""
    with one_torch_thread():
        return train_lm(gpt(2, 0), lm_dataset(TOKENIZER, corpus(800, 0), 24), epochs=6, batch_size=32, lr=1e-2,
                        device="cpu")


def test_targets_mask_padding_prompt_and_the_last_token():
    ids = torch.tensor([[5, 6, 7, 8, 0], [5, 6, 7, 0, 0]])
    y = next_token_targets(ids, torch.tensor([4, 3]), torch.tensor([2, 1]))
    assert y.tolist() == [[IGNORE, 7, 8, IGNORE, IGNORE], [6, 7, IGNORE, IGNORE, IGNORE]]
    data = lm_dataset(TOKENIZER, ["cat sees", "dog eats the fish"], 8, prompts=["the", "a"])
    first = data.batch(torch.tensor([0, 1]))
    assert first.y.shape == first.x["input_ids"].shape == (2, 5)
    assert (first.y[0] != IGNORE).sum() == 2 and (first.y[1] != IGNORE).sum() == 4  # the prompt is context only


def test_divergences_ignore_masked_positions(teacher):
    data = lm_dataset(TOKENIZER, corpus(4, 5), 24)
    batch = data.batch(torch.arange(4))
    student = gpt(1, 3)
    s_out = student(batch.x)
    t_out = LiveTeacher(teacher).outputs(batch)
    fkl = method_class("fkl")()
    base = fkl(type(t_out)(s_out), t_out, batch.y)
    noisy = s_out.clone()
    noisy[batch.y == IGNORE] += 50 * torch.randn_like(noisy[batch.y == IGNORE])
    assert torch.allclose(fkl(type(t_out)(noisy), t_out, batch.y), base)


def test_distilled_student_beats_the_student_alone_on_held_out_perplexity(teacher, tmp_path):
    few = lm_dataset(TOKENIZER, corpus(24, 1), 24)  # the student sees only these tokens
    held_out = lm_dataset(TOKENIZER, corpus(300, 2), 24)
    settings = dict(epochs=20, batch_size=16, lr=1e-2, device="cpu")
    alone = perplexity(train_lm(gpt(1, 1), few, **settings), held_out)
    distilled = perplexity(distill_lm(teacher, gpt(1, 1), few, loss="fkl", **settings), held_out)
    cached = perplexity(distill_lm(teacher, gpt(1, 1), few, loss="fkl", topk=5, cache_dir=tmp_path / "c",
                                   **settings), held_out)
    print(f"held-out perplexity: teacher {perplexity(teacher, held_out):.2f}, alone {alone:.2f}, "
          f"distilled {distilled:.2f}, distilled from the top-5 cache {cached:.2f}")
    assert perplexity(teacher, held_out) < distilled < 0.9 * alone
    assert cached < 0.9 * alone


def test_topk_cache_keeps_the_teachers_top_tokens_and_is_reused(teacher, tmp_path):
    data = lm_dataset(TOKENIZER, corpus(10, 4), 24)
    cache = build_token_cache(teacher, data, tmp_path / "cache", topk=4)
    batch = data.batch(torch.tensor([3, 7, 1]))
    cached = cache.outputs(batch).logits
    live = torch.log_softmax(LiveTeacher(teacher).outputs(batch).logits, -1)
    top = live.topk(4, dim=-1)
    assert torch.allclose(cached.gather(-1, top.indices), top.values, atol=2e-3)  # fp16 storage
    assert torch.allclose(cached.exp().sum(-1), torch.ones(cached.shape[:-1]), atol=1e-3)
    stamp = (tmp_path / "cache" / "topk_logp.npy").stat().st_mtime_ns  # the arrays are not written again
    build_token_cache(teacher, data, tmp_path / "cache", topk=4)
    assert (tmp_path / "cache" / "topk_logp.npy").stat().st_mtime_ns == stamp
    with pytest.raises(DistilError, match="live teacher"):
        distill_lm(teacher, gpt(1, 1), data, topk=4, cache_dir=tmp_path / "cache", on_policy=0.5)


def test_on_policy_batches_are_the_students_continuations(teacher):
    data = lm_dataset(TOKENIZER, corpus(8, 6), 24)
    fit = OnPolicyFit(stage="gkd", model=gpt(1, 2), objective=None, train=data, val=None, cfg=None,
                      device=torch.device("cpu"), seed=0, on_policy=1.0, prompt_tokens=3)
    batch = data.batch(torch.arange(4))
    sampled = fit.prepare_batch(batch, 0)
    ids = sampled.x["input_ids"]
    assert torch.equal(ids[:, :3], batch.x["input_ids"][:, :3]) and not torch.equal(ids, batch.x["input_ids"])
    assert (sampled.y[:, :2] == IGNORE).all() and torch.equal(sampled.y[:, 2:-1], ids[:, 3:])
    student = distill_lm(teacher, gpt(1, 2), data, loss="jsd", on_policy=0.5, prompt_tokens=3, epochs=1,
                         batch_size=4, device="cpu")
    assert torch.isfinite(student(Batch(torch.arange(1), data.inputs(torch.arange(1)), None).x)).all()


def test_a_tokenizer_mismatch_is_refused_naming_both_and_the_way_out(teacher):
    other = word_tokenizer(WORDS[:-1] + ["zebra"], bert_style=False)
    with pytest.raises(DistilError, match=r"tokenizers differ \(teacher: .*41 tokens.*student: .*uld / gold"):
        distill_lm(teacher, gpt(1, 0, other), lm_dataset(TOKENIZER, corpus(4, 0), 24))
    with pytest.raises(DistilError, match="no tokenizer says which rows are padding"):
        reconcile_vocab(CausalLM(teacher.hf), CausalLM(gpt(1, 0, word_tokenizer(WORDS + ["zebra"])).hf))
    plain = CausalLM(gpt(1, 0).hf)  # no tokenizer to compare: the vocabulary sizes still must agree
    assert isinstance(plain(TensorDict(input_ids=torch.ones(1, 3, dtype=torch.long),
                                       attention_mask=torch.ones(1, 3, dtype=torch.long))), torch.Tensor)


def test_padding_rows_of_one_tokenizer_are_trimmed(teacher):
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(TOKENIZER) + 23, n_positions=32, n_embd=32, n_layer=1, n_head=2)
    padded = CausalLM(transformers.GPT2LMHeadModel(config), TOKENIZER)  # like Qwen2.5's 152064 vs 151936 rows
    data = lm_dataset(TOKENIZER, corpus(16, 3), 24)
    student = distill_lm(teacher, padded, data, epochs=1, batch_size=8, device="cpu")
    assert student.vocab_size == teacher.vocab_size == len(TOKENIZER)
    assert student(data.batch(torch.arange(2)).x).shape[-1] == len(TOKENIZER)
