"""Model factories the tests load through `python:helper_models:...`."""

import torch
from torch import nn


class NanAfter(nn.Module):
    """A linear classifier whose logits turn NaN after `steps` training forwards (to test the NaN guard)."""

    def __init__(self, input_shape, num_classes, steps: int):
        super().__init__()
        self.linear = nn.Linear(int(torch.tensor(input_shape).prod()), num_classes)
        self.calls = 0
        self.steps = steps

    def forward(self, x):
        out = self.linear(x.flatten(1))
        if self.training:
            self.calls += 1
            if self.calls > self.steps:
                out = out * float("nan")
        return out


def nan_after_20(input_shape, num_classes):
    """NaN logits from the 21st training step on."""
    return NanAfter(input_shape, num_classes, 20)


def expects_40_features(input_shape, num_classes):
    """A model that only fits 40 input features, whatever the data."""
    return nn.Sequential(nn.Flatten(), nn.Linear(40, num_classes))
