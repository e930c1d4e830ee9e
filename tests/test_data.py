"""The built-in datasets: shapes, splits, determinism, train-only normalization, file formats and their errors."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from distil.data import (
    IndexedDataset,
    IndexedTensorDataset,
    Splits,
    as_indexed,
    available_datasets,
    load_dataset,
)
from distil.errors import DistilError
from distil.recipe import DataConfig


@pytest.fixture(scope="module")
def digits() -> Splits:
    return load_dataset(DataConfig(name="digits"))


def test_available_datasets() -> None:
    assert {"digits", "mnist1d", "fashion_mnist", "synthetic", "npz", "csv"} <= set(available_datasets())


def test_unknown_dataset_suggests_nearest() -> None:
    with pytest.raises(DistilError, match="did you mean digits"):
        load_dataset(DataConfig(name="digit"))


def test_digits_shapes_and_split_sizes(digits: Splits) -> None:
    assert (len(digits.train), len(digits.val), len(digits.test)) == (1258, 180, 359)
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10 and digits.name == "digits"
    assert digits.class_names == [str(c) for c in range(10)]
    i, x, y = digits.train[5]
    assert i == 5 and x.shape == (1, 8, 8) and x.dtype == torch.float32 and y.dtype == torch.int64


def test_digits_split_is_stratified(digits: Splits) -> None:
    fractions = [torch.bincount(s.y, minlength=10).double() / len(s) for s in (digits.train, digits.val, digits.test)]
    for f in fractions[1:]:
        assert torch.allclose(f, fractions[0], atol=0.02)


def test_same_config_gives_identical_splits(digits: Splits) -> None:
    again = load_dataset(DataConfig(name="digits"), seed=123)
    for a, b in zip((digits.train, digits.val, digits.test), (again.train, again.val, again.test), strict=True):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    other = load_dataset(DataConfig(name="digits", split_seed=1))
    assert not torch.equal(other.test.y, digits.test.y)


def test_indices_are_positions(digits: Splits) -> None:
    for split in (digits.train, digits.val, digits.test):
        idx = torch.arange(len(split))
        got, x, y = split[idx]
        assert torch.equal(got, idx) and torch.equal(x, split.x) and torch.equal(y, split.y)
    assert digits.test[-1][0] == len(digits.test) - 1


def test_normalization_uses_train_statistics_only(digits: Splits) -> None:
    assert abs(digits.train.x.mean().item()) < 1e-4 and abs(digits.train.x.std().item() - 1) < 1e-3
    raw = load_dataset(DataConfig(name="digits", normalize=False))
    assert 0.0 <= raw.train.x.min() and raw.train.x.max() <= 1.0
    mean, std = raw.train.x.mean(), raw.train.x.std(unbiased=False)
    for normed, plain in ((digits.val, raw.val), (digits.test, raw.test)):
        assert torch.allclose(normed.x, (plain.x - mean) / std, atol=1e-4)


def test_zero_val_fraction_gives_empty_val() -> None:
    splits = load_dataset(DataConfig(name="digits", val_fraction=0.0, limit=100))
    assert len(splits.val) == 0 and splits.val.x.shape == (0, 1, 8, 8)
    assert len(splits.train) + len(splits.test) == 100


def test_limit_keeps_a_stratified_subset() -> None:
    splits = load_dataset(DataConfig(name="digits", limit=200))
    assert len(splits.train) + len(splits.val) + len(splits.test) == 200
    assert splits.num_classes == 10
    assert torch.bincount(torch.cat([splits.train.y, splits.val.y, splits.test.y]), minlength=10).min() >= 19


def test_mnist1d(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DISTIL_CACHE_DIR", str(tmp_path))
    state = np.random.get_state()
    splits = load_dataset(DataConfig(name="mnist1d", limit=100))
    assert np.array_equal(np.random.get_state()[1], state[1])
    assert splits.input_shape == (1, 40) and splits.num_classes == 10
    assert (len(splits.train) + len(splits.val), len(splits.test)) == (80, 20)
    assert len(list(tmp_path.glob("mnist1d-*.npz"))) == 1 and not list(tmp_path.glob("*.tmp"))
    cached = load_dataset(DataConfig(name="mnist1d", limit=100))
    assert torch.equal(cached.train.x, splits.train.x)


def _idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def _write_fashion(folder: Path) -> None:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.arange(30, dtype=np.uint8) % 10,
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (10, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.arange(10, dtype=np.uint8),
    }
    for name, array in files.items():
        if name.startswith("train-images"):
            (folder / f"{name}.gz").write_bytes(gzip.compress(_idx(array)))
        else:
            (folder / name).write_bytes(_idx(array))


def test_fashion_mnist_reads_idx_files(tmp_path: Path) -> None:
    _write_fashion(tmp_path / "raw")  # one folder down is found too
    splits = load_dataset(DataConfig(name="fashion_mnist", path=str(tmp_path), val_fraction=0.2, normalize=False))
    assert splits.input_shape == (1, 28, 28) and splits.num_classes == 10
    assert (len(splits.train), len(splits.val), len(splits.test)) == (24, 6, 10)
    assert splits.class_names[0] == "T-shirt/top" and splits.class_names[-1] == "Ankle boot"
    assert 0.0 <= splits.train.x.min() and splits.train.x.max() <= 1.0
    assert torch.equal(splits.test.y, torch.arange(10))


def test_fashion_mnist_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(DistilError, match="apt-get install dataset-fashion-mnist.*data.path"):
        load_dataset(DataConfig(name="fashion_mnist", path=str(tmp_path / "nowhere")))


def test_fashion_mnist_corrupt_file(tmp_path: Path) -> None:
    _write_fashion(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"not an idx file")
    with pytest.raises(DistilError, match="t10k-labels-idx1-ubyte.*magic number.*intact copy"):
        load_dataset(DataConfig(name="fashion_mnist", path=str(tmp_path)))


def test_synthetic_image_shape() -> None:
    cfg = DataConfig(name="synthetic", synthetic={"num_samples": 300, "num_classes": 5, "shape": [3, 8, 8]})
    splits = load_dataset(cfg)
    assert splits.input_shape == (3, 8, 8) and splits.num_classes == 5 and len(splits.class_names) == 5
    assert len(splits.train) + len(splits.val) + len(splits.test) == 300
    assert torch.equal(load_dataset(cfg).train.x, splits.train.x)
    per_channel = splits.train.x.mean(dim=(0, 2, 3))
    assert torch.allclose(per_channel, torch.zeros(3), atol=1e-4)
    # learnable: nearest class mean on train already beats chance (0.2) by far
    means = torch.stack([splits.train.x[splits.train.y == c].mean(0) for c in range(5)]).flatten(1)
    pred = torch.cdist(splits.test.x.flatten(1), means).argmin(1)
    assert (pred == splits.test.y).double().mean() > 0.5


def test_npz_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    x, y = rng.normal(size=(50, 2, 5)).astype(np.float32), rng.integers(0, 3, 50)
    x_test, y_test = rng.normal(size=(20, 2, 5)).astype(np.float32), rng.integers(0, 3, 20)
    np.savez(path, x=x, y=y, x_test=x_test, y_test=y_test, class_names=np.array(["a", "b", "c"]))
    splits = load_dataset(DataConfig(name="npz", path=str(path), normalize=False))
    assert splits.class_names == ["a", "b", "c"] and splits.input_shape == (2, 5)
    assert torch.equal(splits.test.x, torch.from_numpy(x_test)) and torch.equal(splits.test.y, torch.from_numpy(y_test))
    assert len(splits.train) + len(splits.val) == 50


def test_npz_without_class_names_remaps_labels(tmp_path: Path) -> None:
    path = tmp_path / "data.npz"
    np.savez(path, x=np.ones((40, 3)), y=np.repeat([10, 20], 20))
    splits = load_dataset(DataConfig(name="npz", path=str(path)))
    assert splits.class_names == ["10", "20"] and splits.num_classes == 2
    assert set(splits.train.y.tolist()) == {0, 1}


def test_csv_round_trip_with_string_labels(tmp_path: Path) -> None:
    path = tmp_path / "iris.csv"
    rows = [f"{i * 0.1:.1f},{i % 7},{['setosa', 'virginica', 'versicolor'][i % 3]}" for i in range(60)]
    path.write_text("width,height,species\n" + "\n".join(rows) + "\n")
    splits = load_dataset(DataConfig(name="csv", path=str(path), label_column="species", normalize=False))
    assert splits.class_names == ["setosa", "versicolor", "virginica"] and splits.input_shape == (2,)
    assert len(splits.train) + len(splits.val) + len(splits.test) == 60
    _, x, y = splits.train[0]
    assert splits.class_names[int(y)] == ["setosa", "virginica", "versicolor"][round(x[0].item() * 10) % 3]


def test_csv_missing_label_column_lists_columns(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("a,b\n" + "\n".join(f"{i},{i % 2}" for i in range(20)) + "\n")
    with pytest.raises(DistilError, match="'label'.*a, b"):
        load_dataset(DataConfig(name="csv", path=str(path)))


def test_csv_non_numeric_feature(tmp_path: Path) -> None:
    path = tmp_path / "t.csv"
    path.write_text("colour,label\n" + "\n".join(f"red,{i % 2}" for i in range(20)) + "\n")
    with pytest.raises(DistilError, match="column 'colour'"):
        load_dataset(DataConfig(name="csv", path=str(path)))


@pytest.mark.parametrize("name", ["npz", "csv"])
def test_missing_file_names_path_and_field(tmp_path: Path, name: str) -> None:
    missing = tmp_path / f"absent.{name}"
    with pytest.raises(DistilError, match=f"data.path.*{missing.name}"):
        load_dataset(DataConfig(name=name, path=str(missing)))


def test_indexed_tensor_dataset_indexing() -> None:
    ds = IndexedTensorDataset(torch.arange(12.0).reshape(6, 2), torch.arange(6))
    i, x, y = ds[2]
    assert i == 2 and torch.equal(x, torch.tensor([4.0, 5.0])) and y.item() == 2
    idx = torch.tensor([5, 0, 3])
    got, xb, yb = ds[idx]
    assert torch.equal(got, idx) and xb.shape == (3, 2) and torch.equal(yb, idx)
    with pytest.raises(IndexError):
        ds[6]


def test_as_indexed() -> None:
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    wrapped = as_indexed(TensorDataset(x, y))
    assert isinstance(wrapped, IndexedTensorDataset) and wrapped.x is x and wrapped.y is y
    assert as_indexed(wrapped) is wrapped
    pairs = as_indexed([(np.zeros(2), 1), (np.ones(2), 0)])
    assert isinstance(pairs, IndexedDataset) and len(pairs) == 2
    i, xi, yi = pairs[1]
    assert i == 1 and xi.tolist() == [1.0, 1.0] and yi == 0
    assert as_indexed(pairs) is pairs
