"""Token ids for text samples: a local Hugging Face tokenizer, and a dataset that pads each batch only to its longest
sample (dynamic padding) and, when shuffling, groups samples of similar length (length bucketing)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
from torch import Tensor

from distil.batch import Batch, TensorDict, shard_index
from distil.data import IndexedTensorDataset
from distil.errors import DistilError
from distil.extras import require

BUCKET_BATCHES = 32  # a shuffled chunk of this many batches is sorted by length before it is cut into batches
IGNORE = -100  # a token-level target that no loss counts (padding, prompt)


def transformers_module():
    """The `transformers` package, quiet (no progress bars or load reports), or DistilError saying how to install."""
    transformers = require("transformers", "text", "text models and tokenizers")
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def load_tokenizer(folder: str | Path, field: str = "data.text.tokenizer"):
    """The fast tokenizer saved in a local Hugging Face folder (nothing is downloaded)."""
    path = Path(folder).expanduser()
    if not path.is_dir():
        raise DistilError(f"{field}: {path} is not a folder; give a local Hugging Face model or tokenizer folder.")
    transformers = transformers_module()
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise DistilError(f"{field}: no tokenizer could be loaded from {path} ({first}); give a folder with "
                          "tokenizer.json or the tokenizer files of a Hugging Face model.") from None
    if not set(tokenizer.get_vocab().values()) - set(tokenizer.all_special_ids):
        raise DistilError(f"{field}: the tokenizer in {path} has only its {len(tokenizer)} special tokens, so its "
                          "vocabulary file is missing; give the folder tokenizer.json (or vocab.txt, or vocab.json "
                          "with merges.txt) beside tokenizer_config.json.")
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            raise DistilError(f"{field}: the tokenizer in {path} has neither a pad nor an eos token; add a pad token.")
        tokenizer.pad_token = tokenizer.eos_token  # causal LMs: padding is masked out, so eos can stand in
    return tokenizer


def tokenizer_tokens(tokenizer) -> str:
    """A tokenizer's size and a hash of its vocabulary and special tokens: equal exactly for the same tokens,
    wherever the tokenizer was loaded from."""
    vocab = sorted(tokenizer.get_vocab().items())
    special = sorted((str(k), str(v)) for k, v in tokenizer.special_tokens_map.items())
    digest = hashlib.sha256(json.dumps([vocab, special]).encode()).hexdigest()[:12]
    return f"{len(tokenizer)} tokens, sha256 {digest}"


def tokenizer_difference(first, second) -> str:
    """How two tokenizers differ, in words: their vocabularies, or (same vocabulary) their special tokens."""
    a, b = first.get_vocab(), second.get_vocab()
    if a != b:
        return f"their vocabularies differ ({len(a)} and {len(b)} tokens, {len(a.items() & b.items())} the same)"
    def special(tokenizer) -> str:
        return ", ".join(f"{k} {v!r}" for k, v in sorted(tokenizer.special_tokens_map.items()))
    return f"the same vocabulary, but other special tokens ({special(first)} vs {special(second)})"


def tokenizer_identity(tokenizer) -> str:
    """`name (tokens)`: the tokenizer's folder name for people and `tokenizer_tokens` in parentheses for checks."""
    name = Path(str(tokenizer.name_or_path)).name or type(tokenizer).__name__
    return f"{name} ({tokenizer_tokens(tokenizer)})"


def encode(tokenizer, texts: Sequence[str], max_length: int) -> tuple[Tensor, Tensor]:
    """Token ids right-padded to the longest text (at most `max_length`), and each text's length in tokens."""
    ids = tokenizer(list(texts), truncation=True, max_length=max_length, padding=False)["input_ids"]
    return pad_ids(ids, tokenizer.pad_token_id)


def pad_ids(ids: Sequence[Sequence[int]], pad_id: int) -> tuple[Tensor, Tensor]:
    """Right-pad lists of token ids into one (N, longest) tensor; also return each list's length."""
    lengths = torch.tensor([len(t) for t in ids], dtype=torch.long)
    out = torch.full((len(ids), max(1, int(lengths.max())) if len(ids) else 1), pad_id, dtype=torch.long)
    for i, t in enumerate(ids):
        out[i, :len(t)] = torch.as_tensor(t, dtype=torch.long)
    return out, lengths


class TextDataset(IndexedTensorDataset):
    """Tokenized samples: `x` holds the right-padded ids (so caches and fingerprints see one tensor), `lengths` each
    sample's true length; batches come out as TensorDict(input_ids, attention_mask) cut to their longest sample.

    `y` is one label per sample (classification) or one target per token (language modelling, cut like the ids).
    """

    def __init__(self, x: Tensor, y: Tensor, lengths: Tensor, pad_id: int, bucket: bool = True,
                 spans: Tensor | None = None) -> None:
        super().__init__(x, y)
        self.lengths = lengths
        self.pad_id = int(pad_id)
        self.bucket = bucket
        self.spans = spans  # (N, T, 2) character span [start, end) of each token in its text, when known

    def inputs(self, index: Tensor) -> TensorDict:
        """Ids and attention mask of the samples `index`, padded to the longest of them."""
        lengths = self.lengths[index]
        width = max(1, int(lengths.max())) if len(index) else 1
        mask = torch.arange(width)[None, :] < lengths[:, None]
        return TensorDict(input_ids=self.x[index, :width], attention_mask=mask.long())

    def batch(self, index: Tensor) -> Batch:
        """The Batch of samples `index` (token-level targets cut to the same width as the ids)."""
        x = self.inputs(index)
        y = self.y[index]
        if y.dim() == 2:
            y = y[:, :x["input_ids"].shape[1]]
        return Batch(index, x, y)

    def iter_batches(self, batch_size: int, *, shuffle: bool, generator: torch.Generator | None = None,
                     shard: tuple[int, int] = (0, 1)) -> Iterator[Batch]:
        """Batches in order, or shuffled (with length buckets when `bucket`); same order for the same generator."""
        n = len(self)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        if shuffle and self.bucket:
            groups = self._buckets(order, batch_size, generator)
        else:
            groups = [order[start:start + batch_size] for start in range(0, n, batch_size)]
        for index in groups:
            yield self.batch(shard_index(index, *shard))

    def _buckets(self, order: Tensor, batch_size: int, generator: torch.Generator | None) -> list[Tensor]:
        """Sort each chunk of the shuffled order by length, cut it into batches, then shuffle the batches."""
        chunk = batch_size * BUCKET_BATCHES
        groups = []
        for start in range(0, len(order), chunk):
            part = order[start:start + chunk]
            part = part[torch.argsort(self.lengths[part], descending=True, stable=True)]
            groups += list(part.split(batch_size))
        return [groups[i] for i in torch.randperm(len(groups), generator=generator).tolist()]
