"""Transfer data: the training inputs plus generated query points the teacher labels, so that a transparent
student sees the teacher's behaviour between and around the training points, near its decision boundaries."""

from __future__ import annotations

import torch
from torch import Tensor


def feature_scale(x: Tensor) -> Tensor:
    """Per-feature standard deviation of the inputs (shaped like one sample); constant features get 0."""
    return x.float().std(dim=0, unbiased=False) if len(x) > 1 else torch.zeros_like(x[0], dtype=torch.float32)


def perturb(x: Tensor, noise: float, scale: Tensor, seed: int) -> Tensor:
    """x plus Gaussian noise of std `noise` times each feature's std (seeded)."""
    generator = torch.Generator().manual_seed(seed)
    return x + noise * scale * torch.randn(x.shape, generator=generator)


def query_points(x: Tensor, count: int, *, noise: float, mix: float, seed: int) -> Tensor:
    """`count` new inputs: a share `mix` interpolate two random training inputs (mixup, weight ~ U(0, 1)),
    the rest add Gaussian noise of std `noise` feature-stds to a random training input."""
    generator = torch.Generator().manual_seed(seed)
    n_mix = round(count * mix)
    n_noise = count - n_mix
    scale = feature_scale(x)
    base = x[torch.randint(len(x), (n_noise,), generator=generator)]
    noisy = base + noise * scale * torch.randn(base.shape, generator=generator)
    a = x[torch.randint(len(x), (n_mix,), generator=generator)]
    b = x[torch.randint(len(x), (n_mix,), generator=generator)]
    weight = torch.rand((n_mix,) + (1,) * (x.dim() - 1), generator=generator)
    return torch.cat([noisy, weight * a + (1 - weight) * b]).to(x.dtype)
