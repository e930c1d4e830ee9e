"""`digits`: scikit-learn's 1,797 real 8x8 handwritten digits (shipped inside scikit-learn, no download)."""

from __future__ import annotations

import numpy as np

from distil.data.registry import Arrays, register
from distil.recipe import DataConfig


@register("digits")
def digits(cfg: DataConfig) -> Arrays:
    """The digits as (1, 8, 8) images scaled to [0, 1] (raw values 0..16), labels 0..9; split by the common seeded
    stratified split."""
    from sklearn.datasets import load_digits  # late import: scikit-learn takes seconds to import

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)[:, None]
    return Arrays(x=x, y=bunch.target.astype(np.int64), class_names=[str(c) for c in bunch.target_names],
                  raw_scale=16.0)
