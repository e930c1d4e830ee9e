"""A text run in and out: `distil eval` of its model file needs no --data and no tokenizer, and `distil serve` of it
takes raw strings, with a /metadata example that works when pasted."""

from __future__ import annotations

import json

import pytest
import test_text_helpers as helpers
from cli_runner import run_cli
from serve_client import Server

from distil.pipeline import run_recipe
from distil.recipe import validate_recipe

bert_folder, reviews_csv = helpers.bert_folder, helpers.reviews_csv  # the shared text fixtures
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models


@pytest.fixture(scope="module")
def text_run(tmp_path_factory, bert_folder, reviews_csv):
    """A finished tiny text run: the tiny BERT teacher, a TextCNN student on its tokenizer."""
    root = tmp_path_factory.mktemp("text-serve")
    recipe = validate_recipe({
        "name": "text", "seed": 0, "device": "cpu",
        "data": {"name": "text_csv", "path": str(reviews_csv), "limit": 200, "text": {"max_length": 24}},
        "teacher": {"name": f"hf:{bert_folder}", "epochs": 1, "lr": 3e-3},
        "student": {"name": "textcnn", "channels": [8]},
        "distill": {"baseline": False}, "train": {"epochs": 1, "batch_size": 32, "lr": 3e-3},
        "eval": {"latency_repeats": 3, "throughput_batch": 8}})
    run_recipe(recipe, root, quiet=True)
    return root / "text"


def test_eval_of_a_text_model_file_needs_neither_data_nor_tokenizer(text_run, capsys):
    code, out, err = run_cli(["eval", text_run / "models" / "student.pt"], capsys)
    assert code == 0, err
    results = json.loads((text_run / "results.json").read_text())
    top1 = results["models"]["student"]["top1"]
    assert "student.pt" in out and f"{top1 * 100:.2f}%" in out  # the test split of the run, tokenized as in training


def test_serve_of_a_text_run_takes_raw_strings(text_run):
    server = Server(text_run, text_run / "serve.log")
    try:
        status, meta = server.call("GET", "/metadata")
        assert status == 200 and meta["input"]["kind"] == "tokenizer" and meta["input"]["type"] == "string"
        body = meta["request"]["body"]
        assert isinstance(body["inputs"][0], str) and body["inputs"][0]  # a training text
        status, out = server.call("POST", "/predict", json.dumps(body).encode(), {"Content-Type": "application/json"})
        assert status == 200 and out["labels"][0] in ("neg", "pos")
        texts = ["a great film", "", "words never seen zzz " * 40]  # short, empty, longer than max_length
        status, out = server.predict(texts)
        assert status == 200 and len(out["classes"]) == 3
        assert all(abs(sum(p) - 1) < 1e-6 for p in out["probabilities"])
        status, out = server.predict([[1, 2, 3]])
        assert status == 422 and "text string" in out["detail"]
    finally:
        server.stop()
