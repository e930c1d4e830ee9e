"""PNG plots of the distilled transparent students: the tree, feature importance, and for images the linear
weights per class and the soft tree's inner-node filters. Drawn on matplotlib's Agg canvas, written atomically."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.tree import plot_tree

from distil.checkpoint import write_atomically
from distil.explain.students import Names, is_image

if TYPE_CHECKING:
    from distil.explain.bundle import Explained

TREE_LEVELS_SHOWN = 3
MAX_CLASSES_SPELLED = 3
VALUE_LINE = re.compile(r"value = \[[^\]]*\]\n?")
SOFT_TREE_LEVELS_SHOWN = 4
TOP_FEATURES = 12


def new_figure(width: float, height: float) -> Figure:
    """A figure drawn by the Agg backend (no pyplot, no display, no global state)."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig


def save_figure(fig: Figure, path: Path) -> Path:
    """Render a figure to a PNG, atomically."""
    write_atomically(path, lambda f: fig.savefig(f, format="png", dpi=90))
    return path


def tree_figure(tree, names: Names) -> Figure:
    """The top levels of a fitted sklearn tree, nodes coloured by their majority class."""
    shown = min(tree.get_depth(), TREE_LEVELS_SHOWN)
    fig = new_figure(max(8.0, 2.2 * 2**shown), 2.0 * (shown + 1))
    ax = fig.add_subplot()
    boxes = plot_tree(tree, max_depth=TREE_LEVELS_SHOWN, feature_names=names.features,
                      class_names=[names.classes[int(c)] for c in tree.classes_], filled=True, impurity=False,
                      proportion=True, rounded=True, precision=2, fontsize=7, ax=ax)
    if len(tree.classes_) > MAX_CLASSES_SPELLED:  # a long value list per node would overlap its neighbours
        for box in boxes:
            box.set_text(VALUE_LINE.sub("", box.get_text()))
    more = f" (first {TREE_LEVELS_SHOWN} levels of {tree.get_depth()})" if tree.get_depth() > shown else ""
    ax.set_title(f"distilled decision tree{more}")
    return fig


def importance_figure(importances: dict[str, np.ndarray], names: Names) -> Figure:
    """One bar chart per student of its most important features."""
    fig = new_figure(4.2 * len(importances), 0.32 * TOP_FEATURES + 1.2)
    for i, (kind, scores) in enumerate(importances.items()):
        ax = fig.add_subplot(1, len(importances), i + 1)
        top = np.argsort(-scores)[:TOP_FEATURES][::-1]
        ax.barh([names.features[j] for j in top], scores[top], color="tab:blue")
        ax.set_title(kind)
        ax.set_xlabel("importance")
        ax.tick_params(axis="y", labelsize=7)
    fig.suptitle("global feature importance (distilled students)")
    fig.tight_layout()
    return fig


def as_image(vector: np.ndarray, input_shape: tuple[int, ...]) -> np.ndarray:
    """A flattened (C, H, W) input as an (H, W) image (channels averaged)."""
    return vector.reshape(input_shape).mean(axis=0)


def weights_figure(weights: np.ndarray, input_shape: tuple[int, ...], names: Names) -> Figure:
    """The linear student's weights of each class as an image: red pushes towards the class, blue away."""
    cols = min(5, len(weights))
    rows = -(-len(weights) // cols)
    fig = new_figure(2.0 * cols, 2.2 * rows)
    limit = float(np.abs(weights).max()) or 1.0
    for k, w in enumerate(weights):
        ax = fig.add_subplot(rows, cols, k + 1)
        ax.imshow(as_image(w, input_shape), cmap="RdBu_r", vmin=-limit, vmax=limit)
        ax.set_title(f"class {names.classes[k]}", fontsize=9)
        ax.axis("off")
    fig.suptitle("linear student: weights per class")
    return fig


def soft_tree_figure(filters: np.ndarray, leaves: np.ndarray, input_shape: tuple[int, ...], names: Names) -> Figure:
    """The soft tree's inner-node filters as images in tree layout; under them each leaf's most probable class."""
    depth = int(np.log2(len(leaves)))
    levels = min(depth, SOFT_TREE_LEVELS_SHOWN)
    width = 2 ** (levels - 1)
    show_leaves = levels == depth
    rows = levels + show_leaves
    fig = new_figure(max(6.0, 1.3 * width * 2), 1.6 * rows)
    grid = fig.add_gridspec(rows, 2 * width)
    limit = float(np.abs(filters).max()) or 1.0
    for level in range(levels):
        span = 2 * width // 2**level
        for j in range(2**level):
            node = 2**level - 1 + j
            ax = fig.add_subplot(grid[level, j * span:(j + 1) * span])
            ax.imshow(as_image(filters[node], input_shape), cmap="RdBu_r", vmin=-limit, vmax=limit)
            ax.set_title(f"node {node}", fontsize=7)
            ax.axis("off")
    if show_leaves:
        for leaf, dist in enumerate(leaves):
            ax = fig.add_subplot(grid[levels, leaf])
            k = int(np.argmax(dist))
            ax.text(0.5, 0.5, f"{names.classes[k]}\n{dist[k]:.2f}", ha="center", va="center", fontsize=8)
            ax.axis("off")
    more = f" (first {levels} levels of {depth})" if levels < depth else ""
    fig.suptitle(f"soft decision tree: inner-node filters (red: go right){more}; leaves: class and probability")
    return fig


def render_plots(explained: Explained, folder: Path) -> list[Path]:
    """Write every plot that applies to the distilled students into `folder`; return their paths."""
    distilled = {kind: variants["distilled"] for kind, variants in explained.students.items()}
    names, shape = explained.names, explained.input_shape
    figures: dict[str, Callable[[], Figure]] = {}
    if "tree" in distilled:
        figures["tree.png"] = lambda: tree_figure(distilled["tree"].model, names)
    figures["importance.png"] = lambda: importance_figure({k: s.importance() for k, s in distilled.items()}, names)
    if is_image(shape) and "linear" in distilled:
        figures["linear_weights.png"] = lambda: weights_figure(distilled["linear"].weights, shape, names)
    if is_image(shape) and "soft_tree" in distilled:
        tree = distilled["soft_tree"]
        figures["soft_tree_filters.png"] = lambda: soft_tree_figure(tree.filters, tree.leaf_distributions, shape,
                                                                     names)
    return [save_figure(make(), folder / name) for name, make in figures.items()]
