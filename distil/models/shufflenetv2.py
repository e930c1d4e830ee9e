"""ShuffleNetV2 (Ma et al. 2018), CIFAR variant: stride-1 3x3 stem, no max-pool, three downsampling stages."""

from __future__ import annotations

import torch
from torch import nn

from distil.models.common import Size, conv_bn, halve, image_shape, init_weights, scaled
from distil.recipe import ModelConfig

STEM_CHANNELS = 24
REPEATS = (4, 8, 4)  # units per stage, the first of each downsampling
WIDTHS = {0.5: (48, 96, 192, 1024), 1.0: (116, 232, 464, 1024), 1.5: (176, 352, 704, 1024),
          2.0: (244, 488, 976, 2048)}  # the paper's stage1..3 and last 1x1 conv widths


def stage_widths(width: float) -> tuple[int, int, int, int]:
    """Stage1..3 and last-conv widths: the paper's at its multipliers, else 1.0's scaled; below width 1 the last
    1x1 conv shrinks with the rest (so a narrow student for small inputs is really small)."""
    if width in WIDTHS:
        stages = WIDTHS[width][:3]
        last = WIDTHS[width][3]
    else:
        stages = tuple(scaled(c, width) for c in WIDTHS[1.0][:3])
        last = 2048 if width >= 2 else 1024
    return (*stages, last if width >= 1 else scaled(1024, width))  # type: ignore[return-value]


def channel_shuffle(x: torch.Tensor, groups: int = 2) -> torch.Tensor:
    """Interleave the channels of `groups` groups so information crosses the two branches."""
    return x.unflatten(1, (groups, -1)).transpose(1, 2).flatten(1, 2)


class ShuffleUnit(nn.Module):
    """Stride-1 unit: half the channels pass through, the other half go through `branch`; then shuffle."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.branch = nn.Sequential(
            conv_bn(half, half, 1),
            conv_bn(half, half, 3, groups=half, relu=False),
            conv_bn(half, half, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """shuffle(cat(x1, branch(x2)))."""
        kept, processed = x.chunk(2, dim=1)
        return channel_shuffle(torch.cat((kept, self.branch(processed)), dim=1))


class DownUnit(nn.Module):
    """Downsampling unit: two strided branches (`branch1`, `branch2`) of out/2 channels each; then shuffle."""

    def __init__(self, in_ch: int, out_ch: int, stride: Size):
        super().__init__()
        half = out_ch // 2
        self.branch1 = nn.Sequential(
            conv_bn(in_ch, in_ch, 3, stride, groups=in_ch, relu=False),
            conv_bn(in_ch, half, 1),
        )
        self.branch2 = nn.Sequential(
            conv_bn(in_ch, half, 1),
            conv_bn(half, half, 3, stride, groups=half, relu=False),
            conv_bn(half, half, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """shuffle(cat(branch1(x), branch2(x)))."""
        return channel_shuffle(torch.cat((self.branch1(x), self.branch2(x)), dim=1))


class ShuffleNetV2(nn.Module):
    """Stem `conv1`, stages `layer1..3` (a DownUnit then ShuffleUnits), 1x1 `conv2`, pooled head `fc`."""

    def __init__(self, input_shape: tuple[int, int, int], num_classes: int, width: float = 0.5, dropout: float = 0.0):
        super().__init__()
        channels, height, spatial_width = input_shape
        widths = stage_widths(width)
        self.conv1 = conv_bn(channels, STEM_CHANNELS, 3)
        size: Size = (height, spatial_width)
        in_ch = STEM_CHANNELS
        for stage, (out_ch, repeats) in enumerate(zip(widths[:3], REPEATS, strict=True), start=1):
            stride, size = halve(size)
            layers = [DownUnit(in_ch, out_ch, stride)] + [ShuffleUnit(out_ch) for _ in range(repeats - 1)]
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
            in_ch = out_ch
        self.conv2 = conv_bn(in_ch, widths[3], 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(widths[3], num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (B, num_classes)."""
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        return self.fc(self.dropout(self.flatten(self.pool(self.conv2(x)))))


def build_shufflenetv2(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int, *, width: float) -> nn.Module:
    """A zoo ShuffleNetV2 with the recipe's `width`, else the zoo name's (`shufflenetv2` = 0.5, `shufflenetv2_x1` =
    1.0)."""
    return ShuffleNetV2(image_shape(cfg.name, input_shape), num_classes, cfg.width or width, cfg.dropout)
