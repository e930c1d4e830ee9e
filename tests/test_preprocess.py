"""Model files take raw inputs as the dataset holds them: the preprocessing they carry turns those into exactly what
the model trained on (digits 0..16, Fashion-MNIST pixels 0..255, with and without standardisation)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_digits
from test_data import _write_fashion

from distil.data import load_dataset
from distil.preprocess import preprocessor
from distil.recipe import DataConfig


def encoder(splits):
    """The preprocessing a model file of these splits carries."""
    return preprocessor({"preprocess": splits.preprocess, "input_shape": list(splits.input_shape)})


@pytest.mark.parametrize("normalize", [True, False])
def test_raw_digits_encode_to_the_training_inputs(normalize: bool) -> None:
    splits = load_dataset(DataConfig(name="digits", limit=200, normalize=normalize))
    pre = encoder(splits)
    example = np.asarray(pre.example())
    assert example.shape == (1, 8, 8) and example.max() > 8 and (example == example.round()).all()  # 0..16
    raw = load_digits().images[:, None]
    assert any(np.array_equal(example, image) for image in raw)  # a sample as scikit-learn holds it
    np.testing.assert_allclose(pre.encode([example.tolist()])[0], splits.train.x[0].numpy(), rtol=1e-5, atol=1e-5)


def test_raw_fashion_pixels_encode_to_the_training_inputs(tmp_path: Path) -> None:
    _write_fashion(tmp_path)
    splits = load_dataset(DataConfig(name="fashion_mnist", path=str(tmp_path), val_fraction=0.2))
    pre = encoder(splits)
    example = np.asarray(pre.example())
    assert example.shape == (1, 28, 28) and 128 < example.max() <= 255 and (example == example.round()).all()
    np.testing.assert_allclose(pre.encode([example.tolist()])[0], splits.train.x[0].numpy(), rtol=1e-5, atol=1e-5)
