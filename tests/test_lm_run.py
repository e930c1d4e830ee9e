"""`distil run` with an `lm:` section: causal-LM teacher -> student on Rotten Tomatoes lines, same tokenizer and
across tokenizers (WordPiece of all-MiniLM-L6-v2 vs a byte-level BPE trained in the run), and its bad inputs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from cli_runner import run_cli

from distil.cache import CacheBuilder, read_layout
from distil.errors import DistilError
from distil.pipeline import run_recipe
from distil.recipe import validate_recipe
from distil.text.config import hf_folder
from distil.text.lm_run import LMRun
from distil.text.tokenize import load_tokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {
    "name": "lm",
    "data": {"name": "rotten_tomatoes", "limit": 150},
    "lm": {"tokenizer": "bpe", "bpe_vocab": 300, "max_length": 24, "generate_tokens": 4,
           "teacher": {"layers": 1, "hidden": 32, "heads": 2}, "student": {"layers": 1, "hidden": 16, "heads": 2}},
    "teacher": {"epochs": 1, "lr": 3e-3},
    "distill": {"losses": [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 1}]},
    "train": {"epochs": 1, "batch_size": 32, "lr": 3e-3},
}


def recipe(**sections):
    """TINY with some sections replaced or merged (one level deep)."""
    raw = json.loads(json.dumps(TINY))
    for key, value in sections.items():
        raw[key] = {**raw[key], **value} if isinstance(value, dict) and key in raw else value
    return validate_recipe(raw)


def test_the_cli_runs_an_lm_recipe_through_the_cache_and_resumes(tmp_path, capsys):
    path = tmp_path / "lm.yaml"
    path.write_text(yaml.safe_dump({**TINY, "cache": {"topk": 8}}))
    code, out, err = run_cli(["cache", str(path), "--runs-dir", tmp_path / "runs"], capsys)  # teacher + cache
    assert code == 0 and "top-8" in out and (tmp_path / "runs" / "lm" / "models" / "teacher").is_dir(), err
    code, out, err = run_cli(["run", str(path), "--runs-dir", tmp_path / "runs", "--resume"], capsys)
    assert code == 0, err
    assert "bits/char" in out and "student (alone)" in out
    run = tmp_path / "runs" / "lm"
    results = json.loads((run / "results.json").read_text())
    for role in ("teacher", "student", "alone"):
        m = results["models"][role]
        assert math.isfinite(m["bits_per_char"]) and 0 < m["next_token_acc"] < 1 and m["tokens_per_s"] > 0
    assert results["models"]["teacher"]["params"] > results["models"]["student"]["params"]
    assert 0 <= results["models"]["student"]["agreement"] <= 1
    per_token = 2 * 8 + 2 * 8 + 4 + 8  # fp16 log-probs, uint16 ids, the rest's mass, a character span (+ headers)
    assert results["cache"]["topk"] == 8 and results["cache"]["bytes_per_token"] == pytest.approx(per_token, abs=1)
    assert (run / "tokenizers" / "bpe-300" / "tokenizer.json").is_file()  # the BPE is saved in the run
    assert "bits per character" in (run / "report.md").read_text()
    page = (run / "report.html").read_text()
    assert "student (alone)" in page and page.count("<img") >= 3 and "teacher cache" in page
    (run / "report.html").unlink()
    code, out, err = run_cli(["report", str(run)], capsys)  # re-rendered from results.json
    assert code == 0 and "next-token acc" in out and (run / "report.html").is_file(), err
    stamp = (run / "models" / "student" / "model.safetensors").stat().st_mtime_ns
    code, _, err = run_cli(["run", str(path), "--runs-dir", tmp_path / "runs", "--resume", "-q"], capsys)
    assert code == 0, err
    assert (run / "models" / "student" / "model.safetensors").stat().st_mtime_ns == stamp  # finished: skipped


def test_a_student_with_another_tokenizer_learns_through_the_cache_with_uld_and_gold(tmp_path):
    minilm = "hf:all-MiniLM-L6-v2"
    for loss in ("uld", "gold"):
        result = run_recipe(recipe(name=f"x-{loss}", lm={"student_tokenizer": minilm}, cache={"topk": 8},
                                   distill={"losses": [{"name": "ce", "weight": 0.5}, {"name": loss}]}),
                            tmp_path, quiet=True)
        models = result.results["models"]
        assert "WordPiece" in models["student"]["tokenizer"] or "30522" in models["student"]["tokenizer"]
        assert "agreement" not in models["student"]  # top-1 tokens of two vocabularies are not compared
        assert math.isfinite(models["student"]["bits_per_char"])
    with pytest.raises(DistilError, match=r"tokenizer .*differ.*\['fkl'\].*use uld or gold"):
        run_recipe(recipe(name="x-fkl", lm={"student_tokenizer": minilm}), tmp_path, quiet=True)
    assert hf_folder(minilm)


def test_on_policy_needs_the_live_teacher(tmp_path):
    with pytest.raises(DistilError, match="lm.on_policy"):
        run_recipe(recipe(lm={"on_policy": 0.5}, cache={"topk": 8}), tmp_path, quiet=True)
    result = run_recipe(recipe(name="gkd", lm={"on_policy": 0.5, "prompt_tokens": 3}), tmp_path, quiet=True)
    assert math.isfinite(result.results["models"]["student"]["bits_per_char"])


def test_prompts_are_context_only_and_packing_joins_lines(tmp_path):
    long = {"max_length": 200}  # no line is cut: both runs score the same characters
    plain = run_recipe(recipe(name="plain", lm=long, distill={"baseline": False}), tmp_path, quiet=True).results
    prompted = run_recipe(recipe(name="prompted", lm={**long, "prompt": "{label} review: "},
                                 distill={"baseline": False}), tmp_path, quiet=True).results
    assert plain["corpus"]["long_lines_cut"] == prompted["corpus"]["long_lines_cut"] == 0
    assert prompted["models"]["student"]["scored_chars"] == plain["models"]["student"]["scored_chars"]
    packed = run_recipe(recipe(name="packed", lm={**long, "packing": True}, distill={"baseline": False}),
                        tmp_path, quiet=True).results
    assert packed["corpus"]["train"] < plain["corpus"]["train"]


def test_bad_tokenizer_folders_and_prompts_are_one_clear_error(tmp_path):
    empty = tmp_path / "empty-tokenizer"
    empty.mkdir()
    with pytest.raises(DistilError, match=r"lm.student_tokenizer: no tokenizer could be loaded from .*empty-tokenizer"):
        run_recipe(recipe(lm={"student_tokenizer": str(empty)}), tmp_path, quiet=True)
    with pytest.raises(DistilError, match="lm.packing"):
        run_recipe(recipe(name="b", lm={"packing": True, "prompt": "x: "}), tmp_path, quiet=True)


def test_one_teacher_cache_serves_a_student_with_another_tokenizer_without_running_the_teacher(tmp_path,
                                                                                                 monkeypatch):
    shared = str(tmp_path / "shared-cache")
    first = run_recipe(recipe(name="bpe-student", cache={"topk": 8, "path": shared}), tmp_path, quiet=True)
    assert first.results["cache"]["folder"] == shared
    teacher = str(tmp_path / "bpe-student" / "models" / "teacher")
    filled = []
    monkeypatch.setattr(CacheBuilder, "_fill_block", lambda self, *a: filled.append(a[-1]))
    second = run_recipe(recipe(name="wordpiece-student", cache={"topk": 8, "path": shared},
                               lm={"teacher": {"folder": teacher}, "student_tokenizer": "hf:all-MiniLM-L6-v2"},
                               distill={"losses": [{"name": "ce", "weight": 0.5}, {"name": "uld", "weight": 0.5}]}),
                        tmp_path, quiet=True).results
    assert filled == []  # the cache was read as it was: the teacher never ran over the training split
    assert second["corpus"]["train"] == first.results["corpus"]["train"]  # the same samples, cut for the teacher
    assert second["cache"]["aligned"] and "through character alignment" in (
        tmp_path / "wordpiece-student" / "report.md").read_text()
    assert math.isfinite(second["models"]["student"]["bits_per_char"])
    assert second["models"]["teacher"]["bits_per_char"] == pytest.approx(
        first.results["models"]["teacher"]["bits_per_char"], rel=1e-6)  # the same teacher, loaded from its folder
    with pytest.raises(DistilError, match=r"keeps the top 8 per position but cache.topk asks for the top 4"):
        run_recipe(recipe(name="other-k", cache={"topk": 4, "path": shared}, lm={"teacher": {"folder": teacher}}),
                   tmp_path, quiet=True)
    with pytest.raises(DistilError, match=r"was built with the tokenizer bpe-300 .*but this teacher's tokenizer is "
                                          r"all-MiniLM-L6-v2 \(30522 tokens.*point cache.path elsewhere"):
        run_recipe(recipe(name="other-tokenizer", cache={"topk": 8, "path": shared},
                          lm={"tokenizer": "hf:all-MiniLM-L6-v2"}), tmp_path, quiet=True)
    assert read_layout(Path(shared)).tokenizer.startswith("bpe-300")  # the shared cache was left as it was


def test_empty_lines_are_dropped_and_lines_longer_than_the_context_cut_into_pieces_that_fit(tmp_path):
    words = "the plot moves slowly but the actors keep it alive".split()
    long_line = " ".join(words * 12)  # about 120 words: several contexts of 24 tokens
    texts = [f"{words[i % 10]} film, fine.\n\n{words[(i + 3) % 10]} acting.\n   \n" for i in range(60)] + [long_line]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"text": t, "label": i % 2}) + "\n" for i, t in enumerate(texts)))
    run = LMRun(recipe(data={"name": "text_jsonl", "path": str(path), "limit": None, "test_fraction": 0.2}),
                tmp_path / "runs")
    corpus = run.corpus
    n_docs = {split: len(s.texts) for split, s in corpus.splits.items()}
    assert corpus.empty_lines >= 2 * 60 - 2 * 3  # two blank lines in every short document (a few may be held out)
    assert corpus.cut_lines >= 4 and all(t.strip() for s in corpus.splits.values() for t in s.texts)
    samples = [t for s in corpus.splits.values() for t in s.texts]
    pieces = [t for t in samples if not t.endswith(("fine.", "acting."))]
    assert " ".join(pieces).split() == long_line.split()  # cut at token boundaries, nothing lost
    for split, s in corpus.splits.items():
        lengths = run.data["teacher"][split].lengths
        assert int(lengths.max()) <= TINY["lm"]["max_length"] and len(lengths) == n_docs[split]
        assert s.overflow(run.teacher_tok, TINY["lm"]["max_length"]) == 0


def test_other_special_tokens_are_named_and_a_vocabulary_folder_without_its_vocabulary_is_refused(tmp_path):
    first = run_recipe(recipe(name="base", distill={"baseline": False}), tmp_path, quiet=True)
    assert first.results["models"]["student"]["agreement"] >= 0
    bpe = load_tokenizer(tmp_path / "base" / "tokenizers" / "bpe-300")
    bpe.add_special_tokens({"pad_token": "<|endoftext|>"})  # the same vocabulary, padded with another token
    other = tmp_path / "other-specials"
    bpe.save_pretrained(other)
    with pytest.raises(DistilError, match=r"the same vocabulary, but other special tokens .*pad_token '<pad>' vs .*"
                                          r"pad_token '<\|endoftext\|>'.*use uld or gold.*drop lm.student_tokenizer"):
        run_recipe(recipe(name="specials", lm={"student_tokenizer": str(other)}), tmp_path, quiet=True)
    broken = tmp_path / "config-only"
    broken.mkdir()
    (broken / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer"}))
    with pytest.raises(DistilError, match=r"lm.student_tokenizer: the tokenizer in .*config-only has only its 5 "
                                          r"special tokens, so its vocabulary file is missing"):
        run_recipe(recipe(name="broken", lm={"student_tokenizer": str(broken)}), tmp_path, quiet=True)
