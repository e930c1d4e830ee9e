"""CIFAR-style ResNets (He et al. 2016; the CRD / mdistiller zoo): a 3x3 stem and three stages of BasicBlocks."""

from __future__ import annotations

import torch
from torch import nn

from distil.models.common import Size, halve, image_shape, init_weights
from distil.recipe import ModelConfig


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus an identity or 1x1-projection shortcut; `relu2` sees the pre-activation sum."""

    def __init__(self, in_ch: int, out_ch: int, stride: Size = (1, 1)):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        project = stride != (1, 1) or in_ch != out_ch
        self.downsample = (
            nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride, bias=False), nn.BatchNorm2d(out_ch))
            if project
            else nn.Identity()
        )
        self.relu2 = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """ReLU(F(x) + shortcut(x))."""
        out = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(out + self.downsample(x))


class CifarResNet(nn.Module):
    """ResNet of depth 6n+2: stem `conv1`/`bn1`, stages `layer1..3` (n blocks each), pooled Linear head `fc`."""

    def __init__(
        self,
        depth: int,
        widths: tuple[int, int, int, int],
        input_shape: tuple[int, int, int],
        num_classes: int,
        dropout: float = 0.0,
    ):
        super().__init__()
        channels, height, width = input_shape
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(channels, widths[0], 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        size: Size = (height, width)
        in_ch = widths[0]
        for stage, out_ch in enumerate(widths[1:], start=1):
            stride: Size = (1, 1)
            if stage > 1:
                stride, size = halve(size)
            layers = [BasicBlock(in_ch, out_ch, stride)] + [BasicBlock(out_ch, out_ch) for _ in range(blocks - 1)]
            self.add_module(f"layer{stage}", nn.Sequential(*layers))
            in_ch = out_ch
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(in_ch, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits of shape (B, num_classes)."""
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.dropout(self.flatten(self.pool(x))))


def build_resnet(
    cfg: ModelConfig,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    depth: int,
    widths: tuple[int, int, int, int],
) -> nn.Module:
    """A zoo ResNet (`resnet20`, `resnet8x4`, ...) for the given depth and (stem, stage1..3) widths."""
    return CifarResNet(depth, widths, image_shape(cfg.name, input_shape), num_classes, cfg.dropout)
