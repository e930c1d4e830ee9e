"""The registry of built-in models: one entry per zoo name, with a line `distil models` can show."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from torch import nn

from distil.errors import DistilError
from distil.explain.soft_tree import DEFAULT_DEPTH, build_soft_tree
from distil.models.cnn import build_cnn
from distil.models.mlp import build_mlp
from distil.models.mobilenetv2 import build_mobilenetv2
from distil.models.resnet import build_resnet
from distil.models.shufflenetv2 import build_shufflenetv2
from distil.models.wrn import build_wrn
from distil.recipe import ModelConfig

Builder = Callable[[ModelConfig, tuple[int, ...], int], nn.Module]

WRN_NAME = re.compile(r"wrn_(\d+)_(\d+)")
SOFT_TREE_NAME = re.compile(r"soft_tree(?:_(\d+))?")


@dataclass(frozen=True)
class ZooEntry:
    """How to build one zoo model, and a one-line description of it."""

    build: Builder
    description: str
    options: tuple[str, ...] = ("dropout",)  # the ModelConfig fields (recipe keys beside `name`) the builder reads


def _resnet(depth: int, widths: tuple[int, int, int, int]) -> ZooEntry:
    wide = " (4x wide)" if widths[0] > 16 else ""
    return ZooEntry(
        partial(build_resnet, depth=depth, widths=widths), f"CIFAR ResNet-{depth}{wide}, stages {list(widths[1:])}"
    )


def _wrn(depth: int, widen: int) -> ZooEntry:
    return ZooEntry(partial(build_wrn, depth=depth, widen=widen), f"Wide ResNet-{depth}-{widen} (CIFAR)")


NARROW, WIDE = (16, 16, 32, 64), (32, 64, 128, 256)

ZOO: dict[str, ZooEntry] = {
    "mlp": ZooEntry(build_mlp, "multilayer perceptron on flattened inputs", ("hidden", "dropout")),
    "cnn": ZooEntry(build_cnn, "small plain conv net for (L,), (C, L) or (C, H, W) inputs", ("channels", "dropout")),
    **{f"resnet{depth}": _resnet(depth, NARROW) for depth in (8, 14, 20, 32, 44, 56, 110)},
    "resnet8x4": _resnet(8, WIDE),
    "resnet32x4": _resnet(32, WIDE),
    **{f"wrn_{depth}_{widen}": _wrn(depth, widen) for depth in (16, 40) for widen in (1, 2)},
    "mobilenetv2": ZooEntry(partial(build_mobilenetv2, width=0.25), "MobileNetV2 (CIFAR), width 0.25",
                            ("width", "dropout")),
    "mobilenetv2_x1": ZooEntry(partial(build_mobilenetv2, width=1.0), "MobileNetV2 (CIFAR), width 1.0",
                               ("width", "dropout")),
    "shufflenetv2": ZooEntry(partial(build_shufflenetv2, width=0.5), "ShuffleNetV2 (CIFAR), width 0.5",
                             ("width", "dropout")),
    "shufflenetv2_x1": ZooEntry(partial(build_shufflenetv2, width=1.0), "ShuffleNetV2 (CIFAR), width 1.0",
                                ("width", "dropout")),
}


def lookup(name: str) -> ZooEntry | None:
    """The zoo entry for a name (any `wrn_<depth>_<width>` and `soft_tree[_<depth>]` included), or None."""
    entry = ZOO.get(name)
    soft_tree = SOFT_TREE_NAME.fullmatch(name)
    if entry is None and soft_tree is not None:
        depth = int(soft_tree[1] or DEFAULT_DEPTH)
        return ZooEntry(partial(build_soft_tree, depth=depth), f"soft decision tree of depth {depth} (Frosst & Hinton)",
                        ())
    match = WRN_NAME.fullmatch(name)
    if entry is None and match is not None:
        depth, widen = int(match[1]), int(match[2])
        if depth < 10 or (depth - 4) % 6 != 0 or widen < 1:
            raise DistilError(
                f"model '{name}': a Wide ResNet needs depth 6n+4 (10, 16, 22, 28, 40, ...) and width >= 1, "
                "e.g. wrn_16_2 or wrn_40_2."
            )
        entry = _wrn(depth, widen)
    return entry
