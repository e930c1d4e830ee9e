"""Model factories loaded by tests/test_models.py through `python:user_models:<factory>` specs."""

from __future__ import annotations

import math

from torch import nn


def make_model(input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A linear classifier sized from the keywords build_model passes."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes))


def make_fixed() -> nn.Module:
    """A factory that takes no arguments: 64 inputs, 10 classes."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 10))


def make_config() -> dict:
    """Not a model: build_model must refuse it."""
    return {"layers": 2}
