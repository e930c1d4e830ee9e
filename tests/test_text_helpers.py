"""Tiny text fixtures built from scratch (no download): a word-level tokenizer, a few-layer BERT classifier folder,
a sentiment-like corpus and a small GPT-2 pair."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

transformers = pytest.importorskip("transformers", reason="the optional text packages (distil[text]) are absent")
tokenizers = pytest.importorskip("tokenizers", reason="the optional text packages (distil[text]) are absent")

POSITIVE = "good great fine lovely superb moving clever sharp funny warm".split()
NEGATIVE = "bad awful dull boring weak flat messy tired silly cold".split()
FILLER = "the a film movie plot story cast it was is and but very quite this that".split()
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def sentiment_corpus(n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Short reviews whose label is the majority sentiment of their sentiment words; lengths vary (3-20 words)."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        label = rng.random() < 0.5
        main, other = (POSITIVE, NEGATIVE) if label else (NEGATIVE, POSITIVE)
        words = [rng.choice(main) for _ in range(rng.randint(2, 4))] + [rng.choice(other)]
        words += [rng.choice(FILLER) for _ in range(rng.randint(1, 15))]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append("pos" if label else "neg")
    return texts, labels


def word_tokenizer(words: list[str], bert_style: bool = True):
    """A fast word-level tokenizer over `words` ([CLS] text [SEP] when bert_style)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {w: i for i, w in enumerate(SPECIALS + sorted(set(words)))}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if bert_style:
        tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", special_tokens=[
            ("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                                cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                                eos_token="[SEP]", bos_token="[CLS]")


def tiny_bert_folder(folder: Path, layers: int = 4, hidden: int = 32, heads: int = 4, seed: int = 0) -> Path:
    """Save a from-scratch BERT classifier of `layers` layers and its tokenizer in `folder`; return the folder."""
    import torch

    torch.manual_seed(seed)
    tokenizer = word_tokenizer(POSITIVE + NEGATIVE + FILLER + ["unseen"])
    config = transformers.BertConfig(vocab_size=len(tokenizer), hidden_size=hidden, num_hidden_layers=layers,
                                     num_attention_heads=heads, intermediate_size=2 * hidden,
                                     max_position_embeddings=64, pad_token_id=0)
    transformers.BertForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_csv(path: Path, n: int, seed: int = 0) -> Path:
    """A text_csv file of `n` reviews with `text` and `label` columns."""
    import csv

    texts, labels = sentiment_corpus(n, seed)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(zip(texts, labels))
    return path



@pytest.fixture(scope="session")
def bert_folder(tmp_path_factory) -> Path:
    """A 4-layer, 32-wide BERT classifier folder with its word-level tokenizer (built once per session)."""
    return tiny_bert_folder(tmp_path_factory.mktemp("bert") / "tiny-bert")


@pytest.fixture(scope="session")
def reviews_csv(tmp_path_factory) -> Path:
    """400 tiny reviews in a text_csv file."""
    return write_csv(tmp_path_factory.mktemp("reviews") / "reviews.csv", 400)
