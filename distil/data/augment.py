"""Replayable augmentation: each (sample index, view) always gets the same random crop, flip and noise.

Randomness comes from a counter-based hash of (seed, index, view), computed for a whole batch at once, so the
teacher cache can store the teacher's output for view v of sample i and the student later sees exactly that
input again — whatever the batch order, worker or process.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distil.batch import Batch
from distil.recipe import AugmentConfig

_MASK = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15


def _to_signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _mix(z: Tensor) -> Tensor:
    """SplitMix64's finalizer on int64 tensors (wrapping arithmetic), a well-spread hash of each element."""
    z = (z ^ (z >> 30).bitwise_and((1 << 34) - 1)) * _to_signed(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> 27).bitwise_and((1 << 37) - 1)) * _to_signed(0x94D049BB133111EB)
    return z ^ (z >> 31).bitwise_and((1 << 33) - 1)


def uniform(seed: int, index: Tensor, view: int, stream: int, shape: tuple[int, ...] = ()) -> Tensor:
    """Uniform [0, 1) numbers, one set of `shape` per sample, fixed by (seed, index, view, stream)."""
    key = (seed * 1_000_003 + view * 7_919 + stream * 104_729) & _MASK
    base = index.to(torch.int64).reshape(-1, *([1] * len(shape))) * _to_signed(_GOLDEN) + _to_signed(key)
    if shape:
        counter = torch.arange(int(torch.tensor(shape).prod()), dtype=torch.int64).reshape(shape)
        base = base + counter * _to_signed(0xD1B54A32D192ED03)
    bits = _mix(_mix(base)).bitwise_and((1 << 53) - 1)
    return bits.to(torch.float64).div(float(1 << 53)).to(torch.float32)


def _shift(x: Tensor, dy: Tensor, dx: Tensor, pad: int) -> Tensor:
    """Random-crop equivalent: zero-pad by `pad`, then take the window offset by (dy, dx) per sample."""
    n, _, h, w = x.shape
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None]).clamp(0, h + 2 * pad - 1)
    cols = (torch.arange(w, device=x.device)[None, :] + dx[:, None]).clamp(0, w + 2 * pad - 1)
    batch = torch.arange(n, device=x.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


def augment(x: Tensor, index: Tensor, view: int, cfg: AugmentConfig, seed: int) -> Tensor:
    """Apply the configured random crop (shift), horizontal flip and Gaussian-like noise to view `view`."""
    index = index.cpu()
    out = x
    if cfg.crop_padding and x.dim() == 4:
        pad = cfg.crop_padding
        dy = (uniform(seed, index, view, 1) * (2 * pad + 1)).long().to(x.device)
        dx = (uniform(seed, index, view, 2) * (2 * pad + 1)).long().to(x.device)
        out = _shift(out, dy, dx, pad)
    if cfg.flip and x.dim() >= 3:
        flip = (uniform(seed, index, view, 3) < 0.5).to(x.device)
        out = torch.where(flip.reshape(-1, *([1] * (x.dim() - 1))), out.flip(-1), out)
    if cfg.noise:
        # the sum of 4 uniforms, centred and scaled to unit variance: cheap, smooth, replayable noise
        u = sum(uniform(seed, index, view, 10 + k, tuple(x.shape[1:])) for k in range(4))
        out = out + cfg.noise * ((u - 2.0) * (3.0**0.5)).to(x.device, x.dtype)
    return out


def view_of(batch: Batch, view: int, cfg: AugmentConfig | None, seed: int) -> Batch:
    """The batch as augmented view `view` of its samples (unchanged when no augmentation is configured)."""
    if cfg is None or not cfg.active:
        return batch
    return Batch(batch.index, augment(batch.x, batch.index, view, cfg, seed), batch.y, view)
