"""`synthetic`: a seeded Gaussian-cluster classification problem of any size, class count and sample shape."""

from __future__ import annotations

import math

import numpy as np

from distil.data.registry import Arrays, register
from distil.recipe import DataConfig

CLUSTERS_PER_CLASS = 2  # more than one blob per class, so a deep teacher has an edge over a linear student
LATENT_DIM = 16  # the dimensions that carry the class signal, spread over every feature by a random projection


@register("synthetic")
def synthetic(cfg: DataConfig) -> Arrays:
    """`cfg.synthetic.num_samples` samples in balanced classes, shaped `cfg.synthetic.shape`, seeded by `split_seed`.

    Each class is a few Gaussian blobs in a small latent space (spread `noise`), projected onto all features;
    larger `noise` makes the classes overlap more.
    """
    spec = cfg.synthetic
    rng = np.random.default_rng(cfg.split_seed)
    n, k, features = spec.num_samples, spec.num_classes, math.prod(spec.shape)
    latent = min(features, LATENT_DIM)
    centers = rng.normal(0.0, 2.0, size=(k, CLUSTERS_PER_CLASS, latent))
    y = rng.permutation(np.arange(n) % k)
    z = centers[y, rng.integers(0, CLUSTERS_PER_CLASS, n)] + spec.noise * rng.normal(size=(n, latent))
    projection = rng.normal(size=(latent, features)) / math.sqrt(latent)
    x = z @ projection + 0.1 * spec.noise * rng.normal(size=(n, features))
    return Arrays(
        x=x.astype(np.float32).reshape(n, *spec.shape), y=y.astype(np.int64), class_names=[str(c) for c in range(k)]
    )
