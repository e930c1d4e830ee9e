"""The `explain` stage: fit each transparent student twice (labels alone; distilled from the teacher on the
transfer data), measure accuracy, fidelity and size, and keep the fitted students in runs/<name>/explain/."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from distil import distributed
from distil.data import IndexedTensorDataset, Splits
from distil.engine import Fit, predict, seed_everything
from distil.explain.bundle import BUNDLE, Explained, load_bundle, save_bundle
from distil.explain.config import ExplainConfig
from distil.explain.fidelity import agreement, fidelity_scores
from distil.explain.linear import LinearStudent
from distil.explain.rules import RuleListStudent
from distil.explain.soft_tree import SoftDecisionTree, SoftTreeStudent
from distil.explain.students import Names, Transparent, feature_names, one_hot
from distil.explain.transfer import feature_scale, perturb, query_points
from distil.explain.tree import TreeStudent
from distil.extras import available
from distil.methods import build_objective
from distil.methods.base import method_class
from distil.recipe import AugmentConfig, LossTerm, TrainConfig
from distil.runlog import MetricsLog
from distil.strategies.schedules import label_terms
from distil.teachers import LiveTeacher

if TYPE_CHECKING:
    from distil.context import RunContext

VARIANTS = ("alone", "distilled")
SOFT_TREE_STAGES = {"alone": "explain_soft_tree_alone", "distilled": "explain_soft_tree"}

FITTED: dict[str, Callable[[ExplainConfig, int, int], Transparent]] = {
    "tree": lambda cfg, classes, seed: TreeStudent(cfg.tree, classes, seed),
    "rules": lambda cfg, classes, seed: RuleListStudent(cfg.rules, classes, seed),
    "linear": lambda cfg, classes, seed: LinearStudent(cfg.linear, classes),
}


@dataclass
class Setting:
    """What the transparent students learn from, and how the soft tree trains (the recipe's loop and losses)."""

    teacher: nn.Module
    splits: Splits
    cfg: ExplainConfig
    losses: list[LossTerm]
    train: TrainConfig
    device: torch.device
    seed: int = 0
    epochs: int | None = None
    augment: AugmentConfig | None = None
    log: MetricsLog | None = None
    quiet: bool = True
    feature_names: list[str] | None = None


def flat(x: Tensor) -> np.ndarray:
    """Inputs as a (samples, features) float32 array."""
    return x.reshape(len(x), -1).float().numpy()


def teacher_logits(teacher: nn.Module, x: Tensor, device: torch.device) -> Tensor:
    """The teacher's logits for inputs x, on the CPU."""
    return predict(teacher, IndexedTensorDataset(x, torch.zeros(len(x), dtype=torch.long)), device)


def distilled_terms(losses: list[LossTerm], temperature: float) -> list[LossTerm]:
    """The recipe's label terms plus Frosst & Hinton's soft_tree_kd at `temperature`, carrying the total weight of
    the recipe's teacher terms (KD on the tree's mixed output at the network's temperature trains leaves that
    only agree on average, and the max-path prediction suffers)."""
    labels = [t for t in losses if not method_class(t.name).needs_teacher]
    weight = sum(t.weight if isinstance(t.weight, float | int) else 1.0
                 for t in losses if method_class(t.name).needs_teacher) or 1.0
    return [*labels, LossTerm(name="soft_tree_kd", weight=weight, temperature=temperature)]


def train_soft_tree(s: Setting, data: IndexedTensorDataset, terms: list[LossTerm], stage: str) -> SoftTreeStudent:
    """Train a soft decision tree with the engine on `data` against `terms` (the teacher joins when they need it)."""
    c = s.cfg.soft_tree
    seed_everything(s.seed)  # both variants start from the same tree
    model = SoftDecisionTree(s.splits.input_shape, s.splits.num_classes, depth=c.depth, beta=c.beta,
                             penalty=c.penalty, prediction=c.prediction)
    objective = build_objective(terms)
    fit = Fit(stage=stage, model=model, objective=objective, train=data, val=s.splits.val, cfg=s.train,
              device=s.device, seed=s.seed, teacher=LiveTeacher(s.teacher) if objective.needs_teacher else None,
              epochs=c.epochs or s.epochs, lr=c.lr, log=s.log, quiet=s.quiet, augment=s.augment)
    return SoftTreeStudent(fit.run().model, flat(data.x))


def fit_students(s: Setting) -> Explained:
    """Fit every configured student on labels alone and distilled, then measure top-1, fidelity and size."""
    cfg, splits = s.cfg, s.splits
    k = splits.num_classes
    x_train, y_train = splits.train.x, splits.train.y
    queries = query_points(x_train, cfg.query_points, noise=cfg.query_noise, mix=cfg.query_mix, seed=s.seed)
    transfer_x = torch.cat([x_train, queries])
    logits = teacher_logits(s.teacher, transfer_x, s.device)
    soft = torch.softmax(logits.double() / cfg.temperature, dim=-1).numpy()
    # the label terms need a target for query points too: the teacher's class
    transfer = IndexedTensorDataset(transfer_x, torch.cat([y_train, logits[len(x_train):].argmax(-1)]))
    data = {"alone": (flat(x_train), one_hot(y_train.numpy(), k)), "distilled": (flat(transfer_x), soft)}

    students: dict[str, dict[str, Transparent]] = {}
    for kind in cfg.students:
        if kind == "soft_tree":
            students[kind] = {
                "alone": train_soft_tree(s, splits.train, label_terms(s.losses), SOFT_TREE_STAGES["alone"]),
                "distilled": train_soft_tree(s, transfer, distilled_terms(s.losses, cfg.temperature),
                                             SOFT_TREE_STAGES["distilled"]),
            }
        else:
            students[kind] = {v: FITTED[kind](cfg, k, s.seed).fit(*data[v]) for v in VARIANTS}

    x_test, labels = splits.test.x, splits.test.y.numpy()
    x_perturbed = perturb(x_test, cfg.test_noise, feature_scale(x_train), seed=s.seed + 1)
    teacher_test = teacher_logits(s.teacher, x_test, s.device).argmax(-1).numpy()
    teacher_perturbed = teacher_logits(s.teacher, x_perturbed, s.device).argmax(-1).numpy()
    measured = {}
    for kind, variants in students.items():
        measured[kind] = {}
        for variant, student in variants.items():
            predicted = student.predict_proba(flat(x_test)).argmax(-1)
            predicted_perturbed = student.predict_proba(flat(x_perturbed)).argmax(-1)
            scores = fidelity_scores(predicted, labels, teacher_test, predicted_perturbed, teacher_perturbed)
            measured[kind][variant] = {**scores, "size": student.size()}
    results = {
        "teacher": {"top1": agreement(teacher_test, labels)},
        "transfer": {"train_inputs": len(x_train), "query_points": len(queries), "temperature": cfg.temperature},
        "test_noise": cfg.test_noise,
        "students": measured,
    }
    names = Names(feature_names(splits.input_shape, s.feature_names), list(splits.class_names))
    return Explained(students, results, names, tuple(splits.input_shape), teacher_test)


def run_explain(run: RunContext, teacher: nn.Module) -> dict:
    """The pipeline's explain stage: fit (or, on resume, reload) the students, render the plots, return results."""
    folder = run.dir / "explain"
    bundle = folder / BUNDLE
    if run.resume and bundle.is_file():
        explained = load_bundle(bundle)
    else:
        for stage in SOFT_TREE_STAGES.values():
            run.log.drop_stage(stage)
        r = run.recipe
        explained = fit_students(Setting(
            teacher=teacher, splits=run.splits, cfg=r.explain, losses=r.distill.losses, train=r.train,
            device=run.device, seed=r.seed, epochs=r.distill.epochs, augment=r.data.augment, log=run.log,
            quiet=run.quiet))
        if distributed.is_main():
            save_bundle(bundle, explained)
    if not distributed.is_main():
        return explained.results  # rank 0 writes the files and reports
    if not available("matplotlib"):  # a lean install: the students and their numbers, no plots
        return {**explained.results, "plots": []}
    from distil.explain.plots import render_plots  # optional: matplotlib (distil[report])

    plots = render_plots(explained, folder)
    return {**explained.results, "plots": [f"explain/{p.name}" for p in plots]}
