"""The `tree` student: a CART decision tree fitted on soft-label-weighted samples, bounded in depth and leaves.

Each input is repeated once per class the target gives at least SOFT_LABEL_FLOOR probability, weighted by that
probability. The weighted Gini impurity is then the expected impurity under the soft labels, so the tree splits
where the teacher's probabilities change (the same splits as a regression tree on the probabilities) and its
leaves hold the mean soft label of the inputs they cover. Hard labels are the special case of one row per input.
"""

from __future__ import annotations

import numpy as np
from sklearn.tree import DecisionTreeClassifier
from sklearn.tree._tree import Tree

from distil.explain.config import TreeConfig
from distil.explain.students import Names, class_summary, normalized

SOFT_LABEL_FLOOR = 1e-3


def soft_label_rows(x: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(inputs, class, weight) rows: each input once per class with at least SOFT_LABEL_FLOOR of its probability."""
    sample, label = np.nonzero(targets >= SOFT_LABEL_FLOOR)
    return x[sample], label, targets[sample, label]


def fit_tree(x: np.ndarray, targets: np.ndarray, *, max_depth: int | None, max_leaf_nodes: int | None,
             min_samples_leaf: int, seed: int = 0) -> DecisionTreeClassifier:
    """A DecisionTreeClassifier fitted on the soft-label rows; `min_samples_leaf` counts weighted inputs."""
    rows, labels, weights = soft_label_rows(x.astype(np.float32), targets)
    tree = DecisionTreeClassifier(max_depth=max_depth, max_leaf_nodes=max_leaf_nodes,
                                  min_weight_fraction_leaf=min(0.5, min_samples_leaf / weights.sum()),
                                  random_state=seed)
    return tree.fit(rows, labels, sample_weight=weights)


def tree_proba(tree: DecisionTreeClassifier, x: np.ndarray, num_classes: int) -> np.ndarray:
    """predict_proba over all `num_classes` classes (a class the tree never saw gets probability 0)."""
    out = np.zeros((len(x), num_classes))
    out[:, tree.classes_] = tree.predict_proba(x.astype(np.float32))
    return out


def node_distribution(tree: DecisionTreeClassifier, node: int, num_classes: int) -> np.ndarray:
    """The class distribution a node of the tree holds, over all `num_classes` classes."""
    out = np.zeros(num_classes)
    out[tree.classes_] = tree.tree_.value[node, 0]
    return out


def tree_arrays(tree: DecisionTreeClassifier) -> dict[str, np.ndarray]:
    """A fitted tree as plain arrays (its nodes, node values and classes), which `tree_from_arrays` restores."""
    state = tree.tree_.__getstate__()
    return {"nodes": state["nodes"], "values": state["values"], "classes": np.asarray(tree.classes_),
            "shape": np.array([tree.n_features_in_, state["max_depth"], state["node_count"]])}


def tree_from_arrays(arrays: dict[str, np.ndarray]) -> DecisionTreeClassifier:
    """The DecisionTreeClassifier `tree_arrays` described, ready to predict and plot (no refitting)."""
    n_features, max_depth, node_count = (int(v) for v in arrays["shape"])
    classes = arrays["classes"]
    tree = Tree(n_features, np.array([len(classes)], dtype=np.intp), 1)
    tree.__setstate__({"max_depth": max_depth, "node_count": node_count, "nodes": arrays["nodes"],
                       "values": arrays["values"]})
    model = DecisionTreeClassifier()
    model.n_features_in_, model.n_outputs_, model.max_features_ = n_features, 1, n_features
    model.classes_, model.n_classes_, model.tree_ = classes, len(classes), tree
    return model


class TreeStudent:
    """A bounded decision tree; its decision path is the list of threshold tests an input passes."""

    kind = "tree"

    def __init__(self, cfg: TreeConfig, num_classes: int, seed: int = 0) -> None:
        self.cfg = cfg
        self.num_classes = num_classes
        self.seed = seed
        self.model: DecisionTreeClassifier | None = None

    def fit(self, x: np.ndarray, targets: np.ndarray) -> TreeStudent:
        """Fit on flattened inputs and probability rows (soft labels, or one-hot labels)."""
        self.model = fit_tree(x, targets, max_depth=self.cfg.max_depth, max_leaf_nodes=self.cfg.max_leaf_nodes,
                              min_samples_leaf=self.cfg.min_samples_leaf, seed=self.seed)
        return self

    def data(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The fitted student as JSON-able settings and arrays (see distil.explain.bundle)."""
        return {"cfg": self.cfg.model_dump(), "num_classes": self.num_classes, "seed": self.seed}, \
            tree_arrays(self.model)

    @classmethod
    def from_data(cls, info: dict, arrays: dict[str, np.ndarray]) -> TreeStudent:
        """The student `data` described."""
        student = cls(TreeConfig.model_validate(info["cfg"]), info["num_classes"], info["seed"])
        student.model = tree_from_arrays(arrays)
        return student

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """The class distribution of the leaf each input reaches."""
        return tree_proba(self.model, x, self.num_classes)

    def size(self) -> dict[str, int]:
        """Nodes, leaves and depth."""
        return {"nodes": int(self.model.tree_.node_count), "leaves": int(self.model.get_n_leaves()),
                "depth": int(self.model.get_depth())}

    def importance(self) -> np.ndarray:
        """Mean decrease in (soft-label) impurity per feature."""
        return normalized(self.model.feature_importances_)

    def decision_path(self, x: np.ndarray, names: Names) -> list[str]:
        """One line per threshold test from the root to the leaf, then the leaf's class distribution."""
        t = self.model.tree_
        row = x.astype(np.float32)
        lines, node = [], 0
        while t.children_left[node] != -1:
            f, threshold = int(t.feature[node]), float(t.threshold[node])
            goes_left = row[f] <= threshold
            lines.append(f"{names.features[f]} = {row[f]:.3g} {'<=' if goes_left else '>'} {threshold:.3g}")
            node = int(t.children_left[node] if goes_left else t.children_right[node])
        lines.append(f"leaf {node}: {class_summary(node_distribution(self.model, node, self.num_classes), names)}")
        return lines
