"""The recipe's `explain` section: which transparent students to distil, their size bounds, the transfer data."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

StudentKind = Literal["tree", "linear", "rules", "soft_tree"]
STUDENT_KINDS: tuple[str, ...] = ("tree", "linear", "rules", "soft_tree")


class _Section(BaseModel):
    """A config section: unknown keys and wrong types are errors."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class TreeConfig(_Section):
    """The `tree` student: a CART decision tree fitted on the teacher's soft labels, bounded in depth and leaves."""

    max_depth: int | None = Field(6, ge=1, description="deepest path (None: unbounded)")
    max_leaf_nodes: int | None = Field(48, ge=2, description="most leaves (None: unbounded)")
    min_samples_leaf: int = Field(2, ge=1, description="fewest (soft-label-weighted) samples a leaf may hold")


class RulesConfig(_Section):
    """The `rules` student: a small tree's paths as an ordered rule list, same-class branches merged."""

    max_rules: int = Field(16, ge=2, description="leaves of the tree the rules are read from (an upper bound)")
    min_samples_leaf: int = Field(5, ge=1, description="fewest samples a rule may cover")


class LinearConfig(_Section):
    """The `linear` student: multinomial logistic regression on soft labels; `l1` > 0 makes it sparse."""

    l1: float = Field(0.0, ge=0, description="L1 strength (exact zeros through proximal steps)")
    l2: float = Field(1e-4, ge=0, description="L2 strength")
    iterations: int = Field(500, ge=1, description="full-batch accelerated proximal-gradient steps")


class SoftTreeConfig(_Section):
    """The `soft_tree` student (Frosst & Hinton 2017), trained by the engine: alone with the recipe's label terms,
    distilled with them plus the paper's loss on the teacher's soft targets (`soft_tree_kd` at explain.temperature)."""

    depth: int = Field(4, ge=1, le=10, description="levels of inner nodes; 2^depth leaves")
    beta: float = Field(1.0, gt=0, description="inverse temperature of the inner-node sigmoids")
    penalty: float = Field(0.1, ge=0, description="lambda of the balanced-split penalty, halved at each level")
    prediction: Literal["max_path", "mixture"] = Field(
        "max_path", description="predict with the most probable leaf, or the path-probability mixture of leaves")
    epochs: int | None = Field(None, ge=1, description="training epochs (default: distill.epochs, else train.epochs)")
    lr: float = Field(0.01, gt=0, description="learning rate: routing and leaves need larger steps than a network")


class ExplainConfig(_Section):
    """Distil the teacher into transparent students, compare them with the same students trained on labels alone."""

    students: list[StudentKind] = Field(default_factory=lambda: list(STUDENT_KINDS), min_length=1)
    query_points: int = Field(2000, ge=0, description="generated inputs labelled by the teacher, added to train")
    query_noise: float = Field(0.3, ge=0, description="std of the Gaussian perturbation, in units of feature std")
    query_mix: float = Field(0.5, ge=0, le=1, description="share of query points interpolated between two "
                             "training inputs (mixup); the rest are Gaussian perturbations")
    temperature: float = Field(1.0, gt=0, description="the teacher's soft labels for every student: "
                             "softmax(logits / T)")
    test_noise: float = Field(0.1, ge=0, description="std of the noise on test inputs for the perturbed fidelity, "
                              "in units of feature std")
    tree: TreeConfig = Field(default_factory=TreeConfig)
    rules: RulesConfig = Field(default_factory=RulesConfig)
    linear: LinearConfig = Field(default_factory=LinearConfig)
    soft_tree: SoftTreeConfig = Field(default_factory=SoftTreeConfig)

    @model_validator(mode="after")
    def _each_student_once(self) -> ExplainConfig:
        twice = sorted({kind for kind in self.students if self.students.count(kind) > 1})
        if twice:
            raise ValueError(f"explain.students names {', '.join(twice)} more than once; list each student once")
        return self
