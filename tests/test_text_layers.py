"""Layer-map distillation (hidden states, attention maps, embeddings) and a whole text recipe run."""

from __future__ import annotations

import pytest
import test_text_helpers as helpers
import torch

from distil.batch import TensorDict
from distil.errors import DistilError
from distil.methods import build_objective
from distil.methods.base import Outputs
from distil.models import build_model
from distil.pipeline import run_recipe
from distil.recipe import LossTerm, ModelConfig, validate_recipe
from distil.teachers import LiveTeacher
from distil.text.layers import AttentionKL, AttentionMSE, EmbeddingMSE, HiddenMSE
from distil.text.models import load_hf_classifier
from distil.text.tokenize import load_tokenizer

bert_folder, reviews_csv = helpers.bert_folder, helpers.reviews_csv  # the shared text fixtures
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models


def pair(folder, layers: int = 2, **text):
    """(student, live teacher) sharing the tiny tokenizer."""
    torch.manual_seed(0)
    teacher = load_hf_classifier(folder, 2)
    cfg = ModelConfig(name=text.pop("name", "hf_student"), text={"source": str(folder), "layers": layers, **text},
                      hidden=[16], channels=[8])
    return build_model(cfg, (32,), 2), LiveTeacher(teacher)


def batch(folder) -> TensorDict:
    """Two padded sentences of different lengths."""
    enc = load_tokenizer(folder)(["good film", "a very dull and boring plot , sadly"], padding=True,
                                  return_tensors="pt")
    return TensorDict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])


def losses(method, student, teacher, x) -> torch.Tensor:
    """The method's value on one batch after attaching it to both models."""
    method.attach(student, teacher)
    from distil.batch import Batch

    out = student(x)
    return method(out, teacher.outputs(Batch(torch.arange(2), x, torch.zeros(2, dtype=torch.long))), None)


def test_default_layer_maps_follow_tinybert_and_minilm(bert_folder):
    student, teacher = pair(bert_folder, layers=2)
    hidden, attention = HiddenMSE(), AttentionKL()
    hidden.attach(student, teacher)
    attention.attach(student, teacher)
    assert hidden.pairs == [(1, 2), (2, 4)] and attention.pairs == [(2, 4)]
    assert EmbeddingMSE().default_map(2, 4) == {0: 0}
    assert student.features == {"hidden", "attention"} and teacher.model.features == {"hidden", "attention"}
    hidden.detach()
    attention.detach()
    assert not student.features and not teacher.model.features


def test_identical_models_have_zero_layer_losses(bert_folder):
    teacher = load_hf_classifier(bert_folder, 2)
    student = load_hf_classifier(bert_folder, 2)
    student.load_state_dict(teacher.state_dict())
    x = batch(bert_folder)
    source = LiveTeacher(teacher)
    for method in (HiddenMSE(project=False, layer_map={1: 1, 4: 4}), AttentionMSE(), AttentionKL(),
                   EmbeddingMSE(project=False)):
        assert losses(method, student.eval(), source, x).item() < 1e-10
    assert losses(HiddenMSE(project=False), student.eval(), source, x).item() < 1e-10


def test_padding_positions_never_count(bert_folder):
    student, teacher = pair(bert_folder)
    x = batch(bert_folder)
    for method in (HiddenMSE(), AttentionMSE(), AttentionKL()):
        method.attach(student.eval(), teacher)
        s_out = student(x)
        t_out = teacher.model(x)
        base = method(s_out, t_out, None)
        pad = x["attention_mask"] == 0
        assert pad.any()
        noisy = {k: v.clone() for k, v in s_out.features.items()}
        for key, value in noisy.items():
            if key.startswith("hidden"):
                value[pad] += 100.0
            elif key.startswith("attention."):
                value.masked_fill_(pad[:, None, :, None], 0.7)  # rows of padded queries
        assert torch.allclose(method(Outputs(s_out.logits, noisy), t_out, None), base)
        method.detach()


def test_projection_trains_and_the_teacher_gets_no_gradient(bert_folder):
    student, teacher = pair(bert_folder, name="bilstm")
    method = HiddenMSE()
    loss = losses(method, student.train(), teacher, batch(bert_folder))
    loss.backward()
    assert method.pairs == [(1, 4)]  # one LSTM layer <- the last teacher layer
    assert method.projections["1"].weight.grad is not None and student.embedding.weight.grad is not None
    assert all(p.grad is None for p in teacher.model.parameters())


def test_bad_layer_maps_and_models_are_refused(bert_folder):
    student, teacher = pair(bert_folder)
    with pytest.raises(DistilError, match=r"layer_map: 3: 4 is out of range; the student has layers 1..2"):
        HiddenMSE(layer_map={3: 4}).attach(student, teacher)
    lstm, teacher = pair(bert_folder, name="textcnn")
    with pytest.raises(DistilError, match="only transformer students"):
        AttentionKL().attach(lstm, teacher)
    with pytest.raises(DistilError, match="needs a live teacher"):
        HiddenMSE().attach(student, object())
    with pytest.raises(DistilError, match="has no parameter 'layers'"):
        build_objective([LossTerm(name="hidden_mse", layers=3)])


def test_text_recipe_runs_end_to_end_with_layer_losses(tmp_path, bert_folder, reviews_csv):
    recipe = validate_recipe({
        "name": "text", "seed": 0, "device": "cpu",
        "data": {"name": "text_csv", "path": str(reviews_csv), "text": {"max_length": 32}},
        "teacher": {"name": f"hf:{bert_folder}", "epochs": 8, "lr": 3e-3},
        "student": {"name": "hf_student", "text": {"layers": 2, "init": "teacher"}},
        "distill": {"losses": [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 2},
                               {"name": "hidden_mse", "weight": 1}, {"name": "attention_kl", "weight": 1},
                               {"name": "embedding_mse", "weight": 1}], "baseline": False},
        "train": {"epochs": 10, "batch_size": 32, "lr": 3e-3},
        "eval": {"latency_repeats": 3, "throughput_batch": 16}})
    result = run_recipe(recipe, tmp_path, quiet=True)
    models = result.results["models"]
    assert models["teacher"]["top1"] > 0.8 and models["student"]["top1"] > 0.8
    assert models["student"]["params"] < models["teacher"]["params"]
    assert models["student"]["latency_ms"] > 0 and models["student"]["throughput"] > 0
    log = (tmp_path / "text" / "metrics.jsonl").read_text()
    assert '"loss_hidden_mse"' in log and '"loss_attention_kl"' in log and '"loss_embedding_mse"' in log
    from distil.checkpoint import load_model

    saved, meta = load_model(tmp_path / "text" / "models" / "student.pt")
    assert meta["config"]["text"]["source"] == str(bert_folder) and not saved.features
