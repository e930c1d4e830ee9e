"""A multilayer perceptron over flattened inputs of any shape."""

from __future__ import annotations

import math

import torch
from torch import nn

from distil.models.common import positive_sizes
from distil.recipe import ModelConfig

DEFAULT_HIDDEN = [256, 256]


class MLP(nn.Module):
    """Flatten, then `features.i` = Linear-ReLU-Dropout blocks, then a Linear `classifier`."""

    def __init__(self, input_shape: tuple[int, ...], num_classes: int, hidden: list[int], dropout: float = 0.0):
        super().__init__()
        self.flatten = nn.Flatten()
        blocks = []
        width = math.prod(input_shape)
        for size in hidden:
            blocks.append(nn.Sequential(nn.Linear(width, size), nn.ReLU(), nn.Dropout(dropout)))
            width = size
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (B, num_classes)."""
        return self.classifier(self.features(self.flatten(x)))


def build_mlp(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The `mlp` zoo entry: hidden sizes from `cfg.hidden` (default [256, 256])."""
    hidden = positive_sizes(cfg.name, "hidden", DEFAULT_HIDDEN if cfg.hidden is None else cfg.hidden)
    return MLP(input_shape, num_classes, hidden, cfg.dropout)
