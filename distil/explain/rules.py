"""The `rules` student: a small tree's root-to-leaf paths read as an ordered rule list (first match wins).

Branches whose leaves all predict the same class are merged into one rule, repeated tests of a feature are
narrowed to the tightest, and the rule covering the most inputs becomes the final ELSE. Because the tree's
leaves partition the inputs, the list predicts exactly what the tree predicts, with fewer, shorter rules.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from distil.explain.config import RulesConfig
from distil.explain.students import Names, normalized
from distil.explain.tree import fit_tree, node_distribution


@dataclass
class Condition:
    """`feature > threshold` (above) or `feature <= threshold`."""

    feature: int
    above: bool
    threshold: float

    def holds(self, x: np.ndarray) -> np.ndarray:
        """Which rows of x (float32, like the tree's own tests) satisfy the condition."""
        values = x[:, self.feature]
        return values > self.threshold if self.above else values <= self.threshold

    def text(self, names: Names) -> str:
        """'pixel[3,4] > 0.12'."""
        return f"{names.features[self.feature]} {'>' if self.above else '<='} {self.threshold:.3g}"


@dataclass
class Rule:
    """IF all conditions THEN the class distribution; `support` is the (weighted) training inputs it covers."""

    conditions: list[Condition]
    distribution: np.ndarray
    support: float

    def text(self, names: Names, last: bool = False) -> str:
        """'IF a AND b THEN 7 (p=0.93, 120 samples)', or 'ELSE 7 (...)' for the final rule."""
        k = int(np.argmax(self.distribution))
        then = f"{names.classes[k]} (p={self.distribution[k]:.2f}, {self.support:.0f} samples)"
        if last:
            return f"ELSE {then}"
        return f"IF {' AND '.join(c.text(names) for c in self.conditions)} THEN {then}"


def tightest(conditions: list[Condition]) -> list[Condition]:
    """Keep one condition per (feature, direction): the largest lower bound and the smallest upper bound."""
    best: dict[tuple[int, bool], Condition] = {}
    for c in conditions:
        key = (c.feature, c.above)
        kept = best.get(key)
        if kept is None or (c.threshold > kept.threshold if c.above else c.threshold < kept.threshold):
            best[key] = c
    return list(best.values())


def tree_rules(tree, num_classes: int) -> list[Rule]:
    """The leaves of a fitted sklearn tree as rules, with same-class sibling branches merged bottom-up."""
    t = tree.tree_

    def walk(node: int, path: list[Condition]) -> list[Rule]:
        if t.children_left[node] == -1:
            return [Rule(path, node_distribution(tree, node, num_classes), float(t.weighted_n_node_samples[node]))]
        f, threshold = int(t.feature[node]), float(t.threshold[node])
        left = walk(int(t.children_left[node]), [*path, Condition(f, False, threshold)])
        right = walk(int(t.children_right[node]), [*path, Condition(f, True, threshold)])
        if len(left) == len(right) == 1 and np.argmax(left[0].distribution) == np.argmax(right[0].distribution):
            support = left[0].support + right[0].support
            mixed = (left[0].distribution * left[0].support + right[0].distribution * right[0].support) / support
            return [Rule(path, mixed, support)]
        return left + right

    return walk(0, [])


def order_rules(rules: list[Rule]) -> list[Rule]:
    """Most confident rules first (ties: most covered); the most covered rule goes last, as the ELSE."""
    default = max(range(len(rules)), key=lambda i: rules[i].support)
    rest = [r for i, r in enumerate(rules) if i != default]
    rest.sort(key=lambda r: (-float(r.distribution.max()), -r.support))
    ordered = [Rule(tightest(r.conditions), r.distribution, r.support) for r in rest]
    return [*ordered, Rule([], rules[default].distribution, rules[default].support)]


def numbered(rules: list[Rule], names: Names) -> list[str]:
    """An ordered rule list as numbered lines, the last one as ELSE."""
    last = len(rules) - 1
    return [f"{i + 1:>3}. {r.text(names, last=i == last)}" for i, r in enumerate(rules)]


class RuleListStudent:
    """An ordered rule list read from a tree with at most `max_rules` leaves."""

    kind = "rules"

    def __init__(self, cfg: RulesConfig, num_classes: int, seed: int = 0) -> None:
        self.cfg = cfg
        self.num_classes = num_classes
        self.seed = seed
        self.rules: list[Rule] = []
        self.num_features = 0

    def fit(self, x: np.ndarray, targets: np.ndarray) -> RuleListStudent:
        """Fit the tree on the soft labels (see distil.explain.tree), then read and order its rules."""
        tree = fit_tree(x, targets, max_depth=None, max_leaf_nodes=self.cfg.max_rules,
                        min_samples_leaf=self.cfg.min_samples_leaf, seed=self.seed)
        self.rules = order_rules(tree_rules(tree, self.num_classes))
        self.num_features = x.shape[1]
        return self

    def data(self) -> tuple[dict, dict[str, np.ndarray]]:
        """The fitted student as JSON-able settings and arrays (see distil.explain.bundle)."""
        rules = [{"conditions": [[c.feature, c.above, c.threshold] for c in r.conditions], "support": r.support}
                 for r in self.rules]
        info = {"cfg": self.cfg.model_dump(), "num_classes": self.num_classes, "seed": self.seed,
                "num_features": self.num_features, "rules": rules}
        return info, {"distributions": np.stack([r.distribution for r in self.rules])}

    @classmethod
    def from_data(cls, info: dict, arrays: dict[str, np.ndarray]) -> RuleListStudent:
        """The student `data` described."""
        student = cls(RulesConfig.model_validate(info["cfg"]), info["num_classes"], info["seed"])
        student.num_features = info["num_features"]
        student.rules = [Rule([Condition(int(f), bool(above), float(t)) for f, above, t in r["conditions"]],
                              distribution, float(r["support"]))
                         for r, distribution in zip(info["rules"], arrays["distributions"], strict=True)]
        return student

    def fired(self, x: np.ndarray) -> np.ndarray:
        """The index of the first rule each input satisfies (the ELSE rule catches the rest)."""
        x = x.astype(np.float32)
        which = np.full(len(x), len(self.rules) - 1)
        open_ = np.ones(len(x), dtype=bool)
        for i, rule in enumerate(self.rules[:-1]):
            match = open_.copy()
            for c in rule.conditions:
                match &= c.holds(x)
            which[match] = i
            open_ &= ~match
        return which

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """The class distribution of the first rule each input satisfies."""
        return np.stack([r.distribution for r in self.rules])[self.fired(x)]

    def size(self) -> dict[str, int]:
        """Rules and conditions in all."""
        return {"rules": len(self.rules), "conditions": sum(len(r.conditions) for r in self.rules)}

    def importance(self) -> np.ndarray:
        """Share of rule coverage that tests each feature (a rule's support counted once per feature it tests)."""
        scores = np.zeros(self.num_features)
        for rule in self.rules:
            for feature in {c.feature for c in rule.conditions}:
                scores[feature] += rule.support
        return normalized(scores)

    def text(self, names: Names) -> list[str]:
        """The numbered rule list."""
        return numbered(self.rules, names)

    def decision_path(self, x: np.ndarray, names: Names) -> list[str]:
        """The rule that fires for one input."""
        i = int(self.fired(x[None])[0])
        return [f"rule {i + 1} fires: {self.rules[i].text(names, last=i == len(self.rules) - 1)}"]
