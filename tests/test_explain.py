"""Transparent students: fitting, predicting, fidelity on cases with known answers, the soft tree, the config."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.tree import DecisionTreeClassifier
from torch import nn

import distil
from distil.checkpoint import load_model, save_model
from distil.data import IndexedTensorDataset, Splits
from distil.errors import DistilError
from distil.explain.bundle import load_bundle, save_bundle
from distil.explain.config import ExplainConfig, LinearConfig, RulesConfig, TreeConfig
from distil.explain.fidelity import agreement, fidelity_scores
from distil.explain.linear import LinearStudent
from distil.explain.rules import RuleListStudent
from distil.explain.soft_tree import SoftDecisionTree, route_matrix
from distil.explain.stage import Setting, fit_students
from distil.explain.students import Names, feature_names, one_hot
from distil.explain.transfer import query_points
from distil.explain.tree import fit_tree, tree_proba
from distil.methods.base import Outputs
from distil.methods.tree import LOG_LEAF, LOG_PATH, SoftTreeKD
from distil.models import build_model
from distil.recipe import LossTerm, ModelConfig, TrainConfig, validate_recipe

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors


def grid(n_per_axis: int = 10, features: int = 3) -> torch.Tensor:
    """Every point of a regular grid in [0, 0.9]^features (step 0.1)."""
    axes = [torch.arange(n_per_axis, dtype=torch.float32) / 10] * features
    return torch.cartesian_prod(*axes)


def rule_class(x: torch.Tensor) -> torch.Tensor:
    """Class 0 left of x0 = 0.45; right of it, class 1 below x1 = 0.25 and class 2 above."""
    return torch.where(x[:, 0] <= 0.45, 0, torch.where(x[:, 1] <= 0.25, 1, 2))


class ThresholdRule(nn.Module):
    """A teacher that is an axis-aligned threshold rule: confident logits for rule_class."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 8.0 * nn.functional.one_hot(rule_class(x), 3).float()


class SklearnTreeTeacher(nn.Module):
    """A teacher that is a fixed, fitted sklearn decision tree (its log leaf probabilities are the logits)."""

    def __init__(self, tree: DecisionTreeClassifier) -> None:
        super().__init__()
        self.tree = tree

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proba = self.tree.predict_proba(x.detach().cpu().numpy().astype(np.float32))
        return torch.from_numpy(np.log(proba + 1e-4)).float()


def grid_splits() -> Splits:
    """The grid, split at random into train / val / test, labelled by the rule."""
    x = grid()
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    parts = order[:600], order[600:700], order[700:]
    sets = [IndexedTensorDataset(x[p], rule_class(x[p])) for p in parts]
    return Splits(*sets, num_classes=3, input_shape=(3,), class_names=["a", "b", "c"], name="grid")


def setting(teacher: nn.Module, splits: Splits, **explain) -> Setting:
    cfg = ExplainConfig(**{"students": ["tree", "rules", "linear"], "query_points": 400, **explain})
    return Setting(teacher=teacher, splits=splits, cfg=cfg, losses=[LossTerm(name="kd", temperature=1.0)],
                   train=TrainConfig(epochs=2, batch_size=64), device=torch.device("cpu"))


def test_fidelity_scores_on_a_known_case() -> None:
    scores = fidelity_scores(predicted=np.array([0, 1, 2, 2]), labels=np.array([0, 1, 1, 2]),
                             teacher=np.array([0, 1, 2, 0]), predicted_perturbed=np.array([1, 1]),
                             teacher_perturbed=np.array([1, 0]))
    assert scores == {"top1": 0.75, "fidelity": 0.75, "fidelity_perturbed": 0.5}
    assert agreement(np.array([]), np.array([])) == 1.0
    with pytest.raises(ValueError, match="shaped"):
        agreement(np.zeros(3), np.zeros(4))


def fitted_sklearn_teacher(splits: Splits) -> SklearnTreeTeacher:
    tree = DecisionTreeClassifier(max_depth=3, random_state=0)
    return SklearnTreeTeacher(tree.fit(splits.train.x.numpy(), splits.train.y.numpy()))


@pytest.mark.parametrize("kind", ["threshold rule", "sklearn tree"])
def test_a_tree_teacher_is_recovered_exactly_by_a_deep_enough_tree(kind: str) -> None:
    splits = grid_splits()
    teacher = ThresholdRule() if kind == "threshold rule" else fitted_sklearn_teacher(splits)
    deep = fit_students(setting(teacher, splits, tree={"max_depth": None, "max_leaf_nodes": None,
                                                      "min_samples_leaf": 1}))
    tree = deep.results["students"]["tree"]["distilled"]
    assert tree["fidelity"] == 1.0 and tree["top1"] == 1.0
    assert deep.results["students"]["rules"]["distilled"]["fidelity"] == 1.0
    assert deep.results["teacher"]["top1"] == 1.0
    stump = fit_students(setting(teacher, splits, tree={"max_depth": 1}))
    assert stump.results["students"]["tree"]["distilled"]["fidelity"] < 1.0  # two leaves cannot show three classes
    assert stump.results["students"]["tree"]["distilled"]["size"] == {"nodes": 3, "leaves": 2, "depth": 1}


def test_fit_students_measures_every_student_both_ways() -> None:
    explained = fit_students(setting(ThresholdRule(), grid_splits()))
    assert explained.results["transfer"] == {"train_inputs": 600, "query_points": 400, "temperature": 1.0}
    for kind in ("tree", "rules", "linear"):
        for variant in ("alone", "distilled"):
            m = explained.results["students"][kind][variant]
            assert set(m) == {"top1", "fidelity", "fidelity_perturbed", "size"}
            assert all(0.0 <= m[key] <= 1.0 for key in ("top1", "fidelity", "fidelity_perturbed"))
    assert explained.names.features == ["x[0]", "x[1]", "x[2]"] and explained.names.classes == ["a", "b", "c"]
    assert len(explained.teacher_test_predictions) == 300


def test_a_saved_bundle_reloads_students_that_predict_and_explain_the_same(tmp_path) -> None:
    splits = grid_splits()
    explained = fit_students(setting(ThresholdRule(), splits, students=["tree", "rules", "linear", "soft_tree"],
                                     soft_tree={"depth": 2, "epochs": 1}))
    save_bundle(tmp_path / "students.npz", explained)
    loaded = load_bundle(tmp_path / "students.npz")
    assert loaded.results == explained.results and loaded.names == explained.names
    assert loaded.input_shape == explained.input_shape
    assert np.array_equal(loaded.teacher_test_predictions, explained.teacher_test_predictions)
    x = splits.test.x.numpy()
    for kind, variants in explained.students.items():
        for variant, student in variants.items():
            again = loaded.students[kind][variant]
            assert np.array_equal(again.predict_proba(x), student.predict_proba(x)), (kind, variant)
            assert np.array_equal(again.importance(), student.importance()) and again.size() == student.size()
            assert again.decision_path(x[0], explained.names) == student.decision_path(x[0], explained.names)


def test_tree_fits_soft_labels_as_their_mean() -> None:
    x = np.array([[0.0], [0.0], [1.0], [1.0]])
    soft = np.array([[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6]])
    tree = fit_tree(x, soft, max_depth=None, max_leaf_nodes=None, min_samples_leaf=1)
    assert np.allclose(tree_proba(tree, np.array([[0.0], [1.0]]), 2), [[0.8, 0.2], [0.3, 0.7]])
    # a class the tree never saw still gets a column
    assert tree_proba(tree, np.array([[0.0]]), 3).shape == (1, 3)


def test_rules_predict_exactly_what_their_tree_predicts_and_read_well() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    labels = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5).astype(int) + (x[:, 2] > 1).astype(int)
    targets = one_hot(labels, 4)
    rules = RuleListStudent(RulesConfig(max_rules=8, min_samples_leaf=5), 4).fit(x, targets)
    tree = fit_tree(x, targets, max_depth=None, max_leaf_nodes=8, min_samples_leaf=5)
    probe = rng.normal(size=(500, 5)).astype(np.float32)
    assert (rules.predict_proba(probe).argmax(1) == tree_proba(tree, probe, 4).argmax(1)).all()
    assert rules.size()["rules"] <= 8 and np.isclose(rules.predict_proba(probe).sum(1), 1).all()
    names = Names(["age", "dose", "weight", "height", "score"], ["none", "low", "mid", "high"])
    text = rules.text(names)
    assert text[0].strip().startswith("1. IF ") and " THEN " in text[0] and "ELSE" in text[-1]
    assert "age" in "\n".join(text) and rules.importance().argmax() in (0, 1, 2)
    fired = rules.decision_path(probe[0], names)
    assert len(fired) == 1 and fired[0].startswith("rule ")


def test_linear_student_recovers_a_linear_teacher_and_l1_makes_it_sparse() -> None:
    torch.manual_seed(0)
    teacher = nn.Linear(6, 3)
    x = torch.randn(800, 6)
    soft = torch.softmax(teacher(x), -1).detach().double().numpy()
    student = LinearStudent(LinearConfig(l2=0.0, iterations=2000), 3).fit(x.numpy(), soft)
    assert np.abs(student.predict_proba(x.numpy()) - soft).max() < 0.05
    probe = torch.randn(500, 6)
    assert agreement(student.predict_proba(probe.numpy()).argmax(1), teacher(probe).argmax(1).numpy()) > 0.97
    assert student.size() == {"nonzero_weights": 18}
    sparse = LinearStudent(LinearConfig(l1=0.05, iterations=500), 3).fit(x.numpy(), soft)
    assert sparse.size()["nonzero_weights"] < 18
    names = Names(feature_names((6,)), ["a", "b", "c"])
    lines = student.decision_path(x[0].numpy(), names)
    assert lines[0].startswith("class ") and "x[" in lines[1]


def naive_log_paths(right: torch.Tensor, depth: int) -> torch.Tensor:
    """Log path probability of each leaf by walking every path (level-order nodes, 0 = left)."""
    out = torch.zeros(right.shape[0], 2**depth)
    for leaf in range(2**depth):
        node = 0
        for level in range(depth):
            go_right = (leaf >> (depth - 1 - level)) & 1
            p = right[:, node] if go_right else 1 - right[:, node]
            out[:, leaf] += p.log()
            node = 2 * node + 1 + go_right
    return out


def test_soft_tree_routes_like_a_tree() -> None:
    torch.manual_seed(0)
    tree = SoftDecisionTree((1, 4, 4), 5, depth=3, prediction="mixture").eval()
    x = torch.randn(7, 1, 4, 4)
    right, log_path, reach = tree.routing(x)
    assert torch.allclose(log_path, naive_log_paths(right, 3), atol=1e-5)
    assert torch.allclose(log_path.exp().sum(1), torch.ones(7), atol=1e-5)
    assert torch.allclose(reach[:, 0], torch.ones(7)) and torch.allclose(reach[:, 1] + reach[:, 2], torch.ones(7))
    assert route_matrix(2, 1).tolist() == [[1, 0], [0, 0], [0, 0], [0, 1], [0, 0], [0, 0]]
    mixture = tree(x)
    assert torch.allclose(mixture.exp().sum(1), torch.ones(7), atol=1e-5)
    tree.prediction = "max_path"
    leaf_log_q = torch.log_softmax(tree.leaves, -1)[log_path.argmax(1)]
    assert torch.allclose(tree(x), leaf_log_q)


def test_soft_tree_penalty_is_the_papers_and_joins_any_loss() -> None:
    tree = SoftDecisionTree((2,), 2, depth=1, penalty=0.5)
    right = torch.tensor([[0.25], [0.75]])
    assert math.isclose(tree.balance_penalty(right, torch.ones(2, 1)).item(), 0.5 * math.log(2), rel_tol=1e-5)
    assert tree.balance_penalty(torch.tensor([[0.9], [0.9]]), torch.ones(2, 1)) > 0.5 * math.log(2)
    tree.train()
    (tree(torch.randn(8, 2)).logits * 0).sum().backward()  # the loss ignores the routing; only the penalty reaches it
    assert tree.inner.weight.grad.abs().sum() > 0
    assert tree.leaves.grad.abs().sum() == 0
    free = SoftDecisionTree((2,), 2, depth=1, penalty=0.0).train()
    (free(torch.randn(8, 2)).logits * 0).sum().backward()
    assert free.inner.weight.grad.abs().sum() == 0


def test_soft_tree_is_a_zoo_student_that_distils_and_saves(tmp_path) -> None:
    assert build_model(ModelConfig(name="soft_tree"), (1, 8, 8), 10).depth == 4
    assert build_model(ModelConfig(name="soft_tree_2"), (3,), 3).depth == 2
    with pytest.raises(DistilError, match="depth 11"):
        build_model(ModelConfig(name="soft_tree_11"), (3,), 3)
    splits = grid_splits()
    torch.manual_seed(0)
    student = build_model(ModelConfig(name="soft_tree_2"), (3,), 3)
    result = distil.distill(ThresholdRule(), student, splits.train, test=splits.test, epochs=15, lr=0.05,
                            batch_size=64, losses=[distil.KD(temperature=1.0)])
    assert result.metrics["agreement"] > 0.8  # chance is 1/3; two soft sigmoid splits approximate the rule
    path = tmp_path / "soft_tree.pt"
    save_model(path, result.student, config={"name": "soft_tree_2"}, input_shape=(3,), num_classes=3,
               class_names=["a", "b", "c"])
    loaded, _ = load_model(path)
    assert torch.equal(loaded(splits.test.x), result.student.eval()(splits.test.x))


def test_query_points_perturb_and_interpolate_training_inputs() -> None:
    x = torch.rand(50, 1, 4, 4)
    q = query_points(x, 31, noise=0.3, mix=0.5, seed=3)
    assert q.shape == (31, 1, 4, 4) and torch.equal(q, query_points(x, 31, noise=0.3, mix=0.5, seed=3))
    mixed = query_points(x, 20, noise=0.3, mix=1.0, seed=0)
    assert (mixed >= x.min(0).values).all() and (mixed <= x.max(0).values).all()
    copies = query_points(x, 10, noise=0.0, mix=0.0, seed=0)
    assert all(any(torch.equal(c, row) for row in x) for c in copies)
    assert query_points(x, 0, noise=0.3, mix=0.5, seed=0).shape == (0, 1, 4, 4)


def test_feature_names_follow_the_input_shape() -> None:
    assert feature_names((1, 2, 2)) == ["pixel[0,0]", "pixel[0,1]", "pixel[1,0]", "pixel[1,1]"]
    assert feature_names((2, 1, 1)) == ["pixel[0,0,0]", "pixel[1,0,0]"]
    assert feature_names((2, 2)) == ["x[0,0]", "x[0,1]", "x[1,0]", "x[1,1]"]
    assert feature_names((2,), ["age", "dose"]) == ["age", "dose"]
    with pytest.raises(ValueError, match="2 feature names for 3"):
        feature_names((3,), ["age", "dose"])


def test_tree_config_bounds_are_kept() -> None:
    explained = fit_students(setting(ThresholdRule(), grid_splits(), students=["tree"],
                                     tree=TreeConfig(max_depth=2, max_leaf_nodes=3).model_dump()))
    size = explained.results["students"]["tree"]["distilled"]["size"]
    assert size["depth"] <= 2 and size["leaves"] <= 3


@pytest.mark.parametrize("explain,message", [
    ({"students": ["tree", "forest"]}, "explain.students.1"),
    ({"students": ["tree", "tree"]}, "tree more than once"),
    ({"students": []}, "explain.students"),
    ({"soft_tree": {"depth": 11}}, "explain.soft_tree.depth"),
    ({"tree": {"depthh": 3}}, "unknown field 'explain.tree.depthh'"),
    ({"query_points": -1}, "explain.query_points"),
    ({"linear": {"l1": -0.1}}, "explain.linear.l1"),
])
def test_bad_explain_config_is_a_distil_error(explain: dict, message: str) -> None:
    with pytest.raises(DistilError, match=message):
        validate_recipe({"explain": explain})


def test_recipes_without_explain_have_none_and_an_empty_section_has_defaults() -> None:
    assert validate_recipe({}).explain is None
    cfg = validate_recipe({"explain": {}}).explain
    assert cfg.students == ["tree", "linear", "rules", "soft_tree"] and cfg.query_points == 2000


def test_soft_tree_kd_is_the_papers_loss_by_hand_and_ce_on_the_mixture_for_hard_targets() -> None:
    log_path = torch.log(torch.tensor([[0.25, 0.75]]))
    log_leaf = torch.log(torch.tensor([[0.9, 0.1], [0.2, 0.8]]))
    student = Outputs(torch.zeros(1, 2), {LOG_PATH: log_path, LOG_LEAF: log_leaf})
    teacher = Outputs(torch.log(torch.tensor([[0.6, 0.4]])))
    by_hand = -math.log(0.25 * math.exp(0.6 * math.log(0.9) + 0.4 * math.log(0.1))
                        + 0.75 * math.exp(0.6 * math.log(0.2) + 0.4 * math.log(0.8)))
    assert math.isclose(SoftTreeKD()(student, teacher, torch.zeros(1)).item(), by_hand, rel_tol=1e-5)
    hard = Outputs(torch.tensor([[0.0, 60.0]]))  # a one-hot teacher: the loss is CE on the path mixture
    mixture = torch.logsumexp(log_path[:, :, None] + log_leaf[None], dim=1)
    assert torch.isclose(SoftTreeKD()(student, hard, torch.zeros(1)), F.nll_loss(mixture, torch.tensor([1])))
    with pytest.raises(DistilError, match="soft decision tree student"):
        SoftTreeKD()(Outputs(torch.zeros(1, 2)), teacher, torch.zeros(1))


def test_soft_tree_kd_trains_leaves_and_routing_with_the_penalty() -> None:
    grads = {}
    for penalty in (0.0, 0.5):
        torch.manual_seed(0)
        tree = SoftDecisionTree((2,), 2, depth=2, penalty=penalty).train()
        out = tree(torch.randn(16, 2))
        SoftTreeKD()(out, Outputs(torch.randn(16, 2)), torch.zeros(16)).backward()  # reads features, not logits
        assert tree.leaves.grad.abs().sum() > 0
        grads[penalty] = tree.inner.weight.grad.clone()
    assert not torch.allclose(grads[0.0], grads[0.5])  # the balance penalty reached the routing
