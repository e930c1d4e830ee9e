"""Pieces the zoo shares: image-shape checks, size-aware strides and the standard initialisation."""

from __future__ import annotations

from torch import nn

from distil.errors import DistilError

Size = tuple[int, int]


def image_shape(name: str, input_shape: tuple[int, ...]) -> tuple[int, int, int]:
    """Return (C, H, W), or raise DistilError when the data is not shaped like an image."""
    shape = tuple(input_shape)
    if len(shape) != 3:
        raise DistilError(
            f"model '{name}' needs image inputs shaped (C, H, W), got {shape}; use mlp or cnn for this data."
        )
    return shape


def halve(size: Size) -> tuple[Size, Size]:
    """The stride that halves each side still longer than 1, and the size after it (never below 1)."""
    stride = (2 if size[0] > 1 else 1, 2 if size[1] > 1 else 1)
    return stride, ((size[0] + stride[0] - 1) // stride[0], (size[1] + stride[1] - 1) // stride[1])


def scaled(channels: int, width: float, least: int = 8) -> int:
    """`channels` times the width multiplier, rounded to a multiple of 4 and at least `least`."""
    return max(least, round(channels * width / 4) * 4)


def init_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions (fan-out, ReLU) and BatchNorm with weight 1, bias 0."""
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d)):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)


def positive_sizes(name: str, field: str, sizes: list[int]) -> list[int]:
    """Check that a list of layer sizes from the recipe is all positive, naming the field if not."""
    if any(size < 1 for size in sizes):
        raise DistilError(f"model '{name}': every entry of '{field}' must be at least 1, got {sizes}.")
    return sizes


def conv_bn(
    in_ch: int, out_ch: int, kernel: int, stride: Size = (1, 1), groups: int = 1, relu: bool = True
) -> nn.Sequential:
    """Conv (no bias) - BatchNorm - optional ReLU, with 'same' padding."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_ch, out_ch, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
    ]
    if relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)
