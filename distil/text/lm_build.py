"""Tokenizers and causal LMs for a run: a byte-level BPE trained on the training split, packaged or local
tokenizers, small GPT-2 / Llama models built from a config, and saving them as Hugging Face folders."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

from distil.errors import DistilError
from distil.text.causal import CausalLM, load_causal_lm
from distil.text.config import LMModelConfig, hf_folder
from distil.text.tokenize import load_tokenizer, transformers_module

BPE_SPECIALS = ("<|endoftext|>", "<pad>")


def train_bpe(texts: Sequence[str], vocab_size: int, folder: Path):
    """A byte-level BPE (GPT-2's scheme) trained on `texts` and saved in `folder` as a Hugging Face tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(BPE_SPECIALS), show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer)
    fast = transformers_module().PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=BPE_SPECIALS[0],
                                                         eos_token=BPE_SPECIALS[0], pad_token=BPE_SPECIALS[1])
    save_folder(folder, fast.save_pretrained)
    return load_tokenizer(folder)


def save_folder(folder: Path, save) -> None:
    """Write a folder whole or not at all: `save(tmp)` fills a temporary sibling, which then replaces `folder`."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save(str(tmp))
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(tmp, folder)


def resolve_tokenizer(spec: str, field: str, run_dir: Path, train_texts: Sequence[str], bpe_vocab: int):
    """The tokenizer a recipe names: `bpe` (trained once on the training split, kept in the run), `hf:<alias or
    folder>` or a local folder."""
    if spec == "bpe":
        folder = run_dir / "tokenizers" / f"bpe-{bpe_vocab}"
        if (folder / "tokenizer.json").is_file():
            return load_tokenizer(folder, field=field)
        return train_bpe(train_texts, bpe_vocab, folder)
    folder = hf_folder(spec) or spec
    tokenizer = load_tokenizer(folder, field=field)
    if spec.startswith("hf:") and "/" not in spec:  # a packaged alias: named as the recipe names it
        tokenizer.name_or_path = spec.removeprefix("hf:")
    return tokenizer


def build_causal_lm(cfg: LMModelConfig, tokenizer, positions: int, seed: int) -> CausalLM:
    """A from-scratch causal LM of `cfg`'s architecture and size over `tokenizer`'s vocabulary."""
    if cfg.hidden % cfg.heads:
        raise DistilError(f"lm: hidden {cfg.hidden} does not divide into {cfg.heads} heads; give a multiple.")
    transformers = transformers_module()
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    if cfg.arch == "gpt2":
        config = transformers.GPT2Config(vocab_size=len(tokenizer), n_positions=positions, n_embd=cfg.hidden,
                                         n_layer=cfg.layers, n_head=cfg.heads, **ids)
        factory = transformers.GPT2LMHeadModel
    else:
        config = transformers.LlamaConfig(vocab_size=len(tokenizer), hidden_size=cfg.hidden,
                                          intermediate_size=4 * cfg.hidden, num_hidden_layers=cfg.layers,
                                          num_attention_heads=cfg.heads, num_key_value_heads=cfg.heads,
                                          max_position_embeddings=positions, tie_word_embeddings=True, **ids)
        factory = transformers.LlamaForCausalLM
    torch.manual_seed(seed)
    return CausalLM(factory(config), tokenizer)


def save_causal_lm(model: CausalLM, folder: Path) -> None:
    """The model and its tokenizer as a Hugging Face folder (written whole, then renamed into place)."""
    def save(tmp: str) -> None:
        model.hf.save_pretrained(tmp)
        model.tokenizer.save_pretrained(tmp)

    save_folder(folder, save)


def load_saved(folder: Path, vocab_limit: int | None = None) -> CausalLM:
    """A model saved by `save_causal_lm`."""
    model = load_causal_lm(folder)
    model.vocab_limit = vocab_limit
    return model
