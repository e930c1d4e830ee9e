"""Wide ResNets (Zagoruyko & Komodakis 2016, the CIFAR version used by CRD / mdistiller): `wrn_<depth>_<width>`."""

from __future__ import annotations

import torch
from torch import nn

from distil.models.common import Size, halve, image_shape, init_weights
from distil.recipe import ModelConfig


class WideBlock(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3 twice, with a 1x1 projection when the shape changes."""

    def __init__(self, in_ch: int, out_ch: int, stride: Size = (1, 1)):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        # Fixed at build time: an identity shortcut takes x, a projection takes the pre-activated x.
        self.identity = stride == (1, 1) and in_ch == out_ch
        self.shortcut = nn.Identity() if self.identity else nn.Conv2d(in_ch, out_ch, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """conv2(relu(bn2(conv1(relu(bn1(x)))))) + shortcut."""
        pre = self.relu1(self.bn1(x))
        out = self.conv2(self.relu2(self.bn2(self.conv1(pre))))
        return out + self.shortcut(x if self.identity else pre)


class WideResNet(nn.Module):
    """WRN-d-k: stem `conv1`, stages `layer1..3` of (d-4)/6 blocks with widths 16k/32k/64k, `bn1`-ReLU, head `fc`."""

    def __init__(
        self, depth: int, widen: int, input_shape: tuple[int, int, int], num_classes: int, dropout: float = 0.0
    ):
        super().__init__()
        channels, height, width = input_shape
        blocks = (depth - 4) // 6
        self.conv1 = nn.Conv2d(channels, 16, 3, 1, 1, bias=False)
        size: Size = (height, width)
        in_ch = 16
        for stage, out_ch in enumerate((16 * widen, 32 * widen, 64 * widen), start=1):
            stride: Size = (1, 1)
            if stage > 1:
                stride, size = halve(size)
            layers = [WideBlock(in_ch, out_ch, stride)] + [WideBlock(out_ch, out_ch) for _ in range(blocks - 1)]
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
            in_ch = out_ch
        self.bn1 = nn.BatchNorm2d(in_ch)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (B, num_classes)."""
        x = self.layer3(self.layer2(self.layer1(self.conv1(x))))
        x = self.relu(self.bn1(x))
        return self.fc(self.dropout(self.flatten(self.pool(x))))


def build_wrn(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int, *, depth: int, widen: int) -> nn.Module:
    """A zoo Wide ResNet of the given depth ((depth - 4) % 6 == 0) and widening factor."""
    return WideResNet(depth, widen, image_shape(cfg.name, input_shape), num_classes, cfg.dropout)
