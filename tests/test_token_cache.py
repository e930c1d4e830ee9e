"""The causal-LM token cache inside distil.cache: top-k + rest mass + character spans, checksums, resume,
fingerprints, and caches built with another tokenizer or k refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from test_text_causal import TOKENIZER, WORDS, corpus, gpt
from test_text_helpers import word_tokenizer

import distil.cache as cache_module
from distil.cache import CacheBuilder, open_cache
from distil.errors import DistilError
from distil.teachers import LiveTeacher
from distil.text.causal import build_token_cache, lm_dataset
from distil.text.tokenize import tokenizer_identity

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def small_blocks(monkeypatch):
    monkeypatch.setattr(cache_module, "BLOCK_ROWS", 40)  # a block: 40 // positions samples


def test_token_cache_rows_hold_topk_rest_and_spans(tmp_path, small_blocks):
    teacher = gpt(1, 0)
    data = lm_dataset(TOKENIZER, corpus(10, 1), 24, bos=True)
    cache = build_token_cache(teacher, data, tmp_path / "c", topk=5, dtype="fp32")
    layout = cache.layout
    assert layout.positions == data.x.shape[1] and layout.block_rows == 40 // data.x.shape[1] > 1
    assert layout.num_blocks == -(-10 // layout.block_rows)
    assert "41 tokens" in layout.tokenizer and layout.classes == len(TOKENIZER)
    batch = data.batch(torch.tensor([7, 2]))
    live = torch.log_softmax(LiveTeacher(teacher).outputs(batch).logits, -1)
    logp, ids, rest = cache.topk(np.array([7, 2]), torch.device("cpu"), batch.y.shape[1])
    top = live.topk(5, -1)
    assert torch.equal(ids, top.indices) and torch.allclose(logp, top.values, atol=1e-5)
    assert torch.allclose(rest, 1 - top.values.exp().sum(-1), atol=1e-5)
    assert torch.equal(cache.spans(np.array([7, 2]))[:, :batch.y.shape[1]], data.spans[[7, 2], :batch.y.shape[1]])
    text = "the cat sees the ball today ."
    row = lm_dataset(TOKENIZER, [text], 24, bos=True).spans[0]
    assert [text[a:b] for a, b in row.tolist() if b > a] == text.split()  # spans cut the text at its tokens


def test_an_interrupted_build_resumes_at_the_missing_blocks(tmp_path, small_blocks, monkeypatch):
    teacher, data = gpt(1, 0), lm_dataset(TOKENIZER, corpus(10, 1), 24)
    filled = []
    real = CacheBuilder._fill_block

    def fill(self, layout, arrays, block):
        if len(filled) == 2:
            raise KeyboardInterrupt
        filled.append(block)
        real(self, layout, arrays, block)

    monkeypatch.setattr(CacheBuilder, "_fill_block", fill)
    with pytest.raises(KeyboardInterrupt):
        build_token_cache(teacher, data, tmp_path / "c", topk=4)
    with pytest.raises(DistilError, match="incomplete"):
        open_cache(tmp_path / "c")
    filled.clear()
    monkeypatch.setattr(CacheBuilder, "_fill_block", lambda self, *a: (filled.append(a[-1]), real(self, *a)))
    cache = build_token_cache(teacher, data, tmp_path / "c", topk=4)
    assert filled == list(range(2, cache.layout.num_blocks))  # only the blocks the interruption left out
    fresh = build_token_cache(teacher, data, tmp_path / "fresh", topk=4)
    assert np.array_equal(np.asarray(cache.arrays["topk_index"]), np.asarray(fresh.arrays["topk_index"]))


def test_a_corrupt_block_fails_its_checksum_and_is_rebuilt(tmp_path, small_blocks):
    teacher, data = gpt(1, 0), lm_dataset(TOKENIZER, corpus(10, 1), 24)
    block = 5 // build_token_cache(teacher, data, tmp_path / "c", topk=4).layout.block_rows
    logp = np.load(tmp_path / "c" / "topk_logp.npy", mmap_mode="r+")
    logp[5, 3, 0] += 1.0
    logp.flush()
    with pytest.raises(DistilError, match=f"topk_logp.npy block {block} fails its checksum"):
        open_cache(tmp_path / "c")
    build_token_cache(teacher, data, tmp_path / "c", topk=4)
    open_cache(tmp_path / "c")


def test_another_teacher_is_refused_by_fingerprint_and_rebuilt_by_the_builder(tmp_path):
    data = lm_dataset(TOKENIZER, corpus(6, 1), 24)
    first = build_token_cache(gpt(1, 0), data, tmp_path / "c", topk=4)
    with pytest.raises(DistilError, match="fingerprint mismatch"):
        open_cache(tmp_path / "c", "another teacher")
    second = build_token_cache(gpt(1, 1), data, tmp_path / "c", topk=4)  # other weights: rebuilt
    assert second.layout.fingerprint != first.layout.fingerprint


def test_a_cache_of_another_tokenizer_or_k_is_refused_by_name(tmp_path):
    data = lm_dataset(TOKENIZER, corpus(6, 1), 24)
    cache = build_token_cache(gpt(1, 0), data, tmp_path / "c", topk=4)
    other = word_tokenizer(WORDS + ["zebra"], bert_style=False)
    with pytest.raises(DistilError, match=r"built with the tokenizer .*41 tokens.*but this teacher's tokenizer is "
                                          r".*42 tokens"):
        open_cache(tmp_path / "c", tokenizer=tokenizer_identity(other))
    with pytest.raises(DistilError, match="keeps the top 4 per position but cache.topk asks for the top 8.*topk: 4"):
        open_cache(tmp_path / "c", topk=8)
    with pytest.raises(DistilError, match="asks for full logits"):
        open_cache(tmp_path / "c", topk=None)
    manifest = json.loads((tmp_path / "c" / "manifest.json").read_text())
    assert manifest["topk"] == 4 and manifest["tokenizer"] == cache.layout.tokenizer
