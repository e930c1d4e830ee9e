"""A language-modelling corpus from the text datasets distil reads (rotten_tomatoes, bbc_news, text_csv,
text_jsonl): documents split into train / val / test, cut into non-empty lines, optionally prompted and packed,
then cut so that every sample fits the context of every tokenizer of the run."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from distil.errors import DistilError
from distil.recipe import DataConfig
from distil.text.causal import lm_dataset, pack_texts, split_long_texts
from distil.text.config import LMConfig
from distil.text.datasets import RAW_READERS
from distil.text.tokenize import TextDataset

SPLITS = ("train", "val", "test")


@dataclass
class Samples:
    """The texts of one split and the prompt before each (context only)."""

    texts: list[str]
    prompts: list[str] | None

    def dataset(self, tokenizer, max_length: int) -> TextDataset:
        """The split tokenized for language modelling (a start token, character spans, prompts masked)."""
        return lm_dataset(tokenizer, self.texts, max_length, prompts=self.prompts, bos=True)

    def overflow(self, tokenizer, max_length: int) -> int:
        """How many samples `tokenizer` needs more than `max_length` tokens for (a start token and prompt
        included): `dataset` truncates those."""
        texts = [p + t for p, t in zip(self.prompts, self.texts)] if self.prompts is not None else self.texts
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return sum(len(i) + 1 > max_length for i in ids)


@dataclass
class Corpus:
    """Samples per split, and how many empty lines were dropped and long lines cut."""

    splits: dict[str, Samples]
    empty_lines: int
    cut_lines: int


def _lines(documents: Sequence[str]) -> tuple[list[tuple[int, str]], int]:
    """(document, line) pairs of the non-empty lines, and how many lines were empty."""
    out, empty = [], 0
    for d, text in enumerate(documents):
        for line in text.splitlines():
            if line.strip():
                out.append((d, line.strip()))
            else:
                empty += 1
    return out, empty


def load_corpus(data: DataConfig, lm: LMConfig, tokenizers: Sequence) -> Corpus:
    """Read `data.name`, split its documents (seeded by data.split_seed), and make samples that fit `lm.max_length`
    tokens (a start token and the prompt included).

    The training split fits the first tokenizer (the teacher's) alone, so that its samples, and the teacher cache
    over them, are the same whichever student reads them (a student tokenizer needing more tokens sees a piece
    truncated); the val and test splits fit every tokenizer, so every model scores the whole held-out text."""
    if data.name not in RAW_READERS:
        raise DistilError(f"data.name: '{data.name}' is not a text corpus; language models read "
                          f"{', '.join(sorted(RAW_READERS))}.")
    if lm.packing and lm.prompt is not None:
        raise DistilError("lm.packing: packed samples hold several lines, each with its own prompt; drop lm.prompt "
                          "or lm.packing.")
    raw = RAW_READERS[data.name](data)
    order = np.random.default_rng(data.split_seed).permutation(len(raw.texts))[:data.limit]
    n_test = max(1, round(data.test_fraction * len(order)))
    n_val = max(1, round(data.val_fraction * len(order)))
    if len(order) < n_test + n_val + 1:
        raise DistilError(f"data: '{data.name}' has {len(order)} documents; give at least 3 for train, val and test.")
    parts = {"test": order[:n_test], "val": order[n_test:n_test + n_val], "train": order[n_test + n_val:]}
    splits, empty, cut = {}, 0, 0
    for split in SPLITS:
        docs = parts[split]
        lines, dropped = _lines([raw.texts[i] for i in docs])
        empty += dropped
        labels = [raw.class_names[int(raw.y[docs[d]])] for d, _ in lines]
        texts = [line for _, line in lines]
        prompts = [lm.prompt.replace("{label}", label) for label in labels] if lm.prompt is not None else None
        fit = tokenizers[:1] if split == "train" else tokenizers
        budget = lm.max_length - 1 - max((len(t(p, add_special_tokens=False)["input_ids"]) for t in fit
                                         for p in set(prompts or [""])), default=0)
        if budget < 4:
            raise DistilError(f"lm.prompt: the prompt takes nearly all of lm.max_length ({lm.max_length} tokens); "
                              "shorten it or raise max_length.")
        samples = texts
        for tokenizer in fit:
            if prompts is None:
                samples = split_long_texts(tokenizer, samples, budget)
            else:  # a cut line keeps its prompt on every piece
                pieces = [(p, s) for p, t in zip(prompts, samples) for s in split_long_texts(tokenizer, [t], budget)]
                prompts, samples = [p for p, _ in pieces], [s for _, s in pieces]
        cut += len(samples) - len(texts)
        if lm.packing:
            samples = pack_texts(fit, samples, budget)
        if not samples:
            raise DistilError(f"data: the {split} split of '{data.name}' has no non-empty line; give more text.")
        splits[split] = Samples(samples, prompts)
    return Corpus(splits, empty, cut)
