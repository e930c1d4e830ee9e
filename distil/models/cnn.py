"""A small plain convolutional net for 1-D signals (C, L) and images (C, H, W)."""

from __future__ import annotations

import torch
from torch import nn

from distil.errors import DistilError
from distil.models.common import init_weights, positive_sizes
from distil.recipe import ModelConfig

DEFAULT_CHANNELS = [32, 64]


class CNN(nn.Module):
    """`features.i` = conv-BN-ReLU(-max-pool) blocks, global average pool, dropout and a Linear `classifier`."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, channels: list[int], dropout: float = 0.0):
        super().__init__()
        shape = tuple(input_shape)
        # A flat vector (L,) is read as a one-channel signal (1, L).
        self.reshape = nn.Unflatten(1, (1, shape[0])) if len(shape) == 1 else nn.Identity()
        if len(shape) == 1:
            shape = (1, *shape)
        conv, norm, pool, avg = (
            (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d, nn.AdaptiveAvgPool1d)
            if len(shape) == 2
            else (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d)
        )
        in_ch, size = shape[0], shape[1:]
        blocks = []
        for out_ch in channels:
            kernel = tuple(2 if side > 1 else 1 for side in size)
            size = tuple(side // k for side, k in zip(size, kernel, strict=True))
            blocks.append(
                nn.Sequential(
                    conv(in_ch, out_ch, 3, padding=1, bias=False),
                    norm(out_ch),
                    nn.ReLU(),
                    pool(kernel) if max(kernel) > 1 else nn.Identity(),
                )
            )
            in_ch = out_ch
        self.features = nn.Sequential(*blocks)
        self.pool = avg(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (B, num_classes)."""
        x = self.pool(self.features(self.reshape(x)))
        return self.classifier(self.dropout(self.flatten(x)))


def build_cnn(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The `cnn` zoo entry: one conv block per entry of `cfg.channels` (default [32, 64])."""
    if not 1 <= len(input_shape) <= 3:
        raise DistilError(
            f"model '{cfg.name}' takes inputs shaped (L,), (C, L) or (C, H, W), got {tuple(input_shape)}; "
            "use mlp for this data."
        )
    channels = positive_sizes(cfg.name, "channels", DEFAULT_CHANNELS if cfg.channels is None else cfg.channels)
    if not channels:
        raise DistilError(f"model '{cfg.name}': 'channels' must list at least one conv width, e.g. [32, 64].")
    return CNN(input_shape, num_classes, channels, cfg.dropout)
