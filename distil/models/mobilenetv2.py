"""MobileNetV2 (Sandler et al. 2018), CIFAR variant: stride-1 stem, inverted residuals, width multiplier."""

from __future__ import annotations

import torch
from torch import nn

from distil.models.common import Size, conv_bn, halve, image_shape, init_weights, scaled
from distil.recipe import ModelConfig

# (expansion t, output channels c, repeats n, halves the size?) per stage; CIFAR keeps the first two at stride 1.
STAGES = ((1, 16, 1, False), (6, 24, 2, False), (6, 32, 3, True), (6, 64, 4, True),
          (6, 96, 3, False), (6, 160, 3, True), (6, 320, 1, False))  # fmt: skip
LAST_CHANNELS = 1280


class InvertedResidual(nn.Module):
    """1x1 `expand` - 3x3 depthwise - 1x1 linear `project`, with a residual when the shape is kept."""

    def __init__(self, in_ch: int, out_ch: int, stride: Size, expansion: int):
        super().__init__()
        hidden = in_ch * expansion
        self.expand = conv_bn(in_ch, hidden, 1) if expansion != 1 else nn.Identity()
        self.depthwise = conv_bn(hidden, hidden, 3, stride, groups=hidden)
        self.project = conv_bn(hidden, out_ch, 1, relu=False)
        self.residual = stride == (1, 1) and in_ch == out_ch  # fixed at build time

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """project(depthwise(expand(x))) (+ x when shapes match)."""
        out = self.project(self.depthwise(self.expand(x)))
        return x + out if self.residual else out


class MobileNetV2(nn.Module):
    """Stem `conv1`, stages `layer1..7` of inverted residuals, 1x1 `conv2`, pooled head `fc`.

    Every width scales with `width` (multiples of 4, at least 8); the last 1x1 conv keeps the paper's 1280 channels
    from width 1 up and shrinks with the rest below it, so a narrow student for small inputs is really small.
    """

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: float = 0.25,
                 dropout: float = 0.0):
        super().__init__()
        channels, height, spatial_width = input_shape
        in_ch = scaled(32, width)
        self.conv1 = conv_bn(channels, in_ch, 3)
        size: Size = (height, spatial_width)
        for index, (expansion, out, repeats, down) in enumerate(STAGES, start=1):
            out_ch = scaled(out, width)
            stride: Size = (1, 1)
            if down:
                stride, size = halve(size)
            layers = [InvertedResidual(in_ch, out_ch, stride, expansion)]
            layers += [InvertedResidual(out_ch, out_ch, (1, 1), expansion) for _ in range(repeats - 1)]
            self.add_module(f"layer{index}", nn.Sequential(*layers))
            in_ch = out_ch
        last = scaled(LAST_CHANNELS, width) if width < 1 else scaled(LAST_CHANNELS, width, least=LAST_CHANNELS)
        self.conv2 = conv_bn(in_ch, last, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(last, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (B, num_classes)."""
        x = self.conv1(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.conv2(self.layer7(self.layer6(self.layer5(x))))
        return self.fc(self.dropout(self.flatten(self.pool(x))))


def build_mobilenetv2(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int, *, width: float) -> nn.Module:
    """A zoo MobileNetV2 with the recipe's `width`, else the zoo name's (`mobilenetv2` = 0.25, `mobilenetv2_x1` =
    1.0)."""
    return MobileNetV2(image_shape(cfg.name, input_shape), num_classes, cfg.width or width, cfg.dropout)
