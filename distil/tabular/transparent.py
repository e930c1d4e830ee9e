"""Transparent students of a tabular run (`tabular.transparent: [rules, tree, linear]`): distil.explain's rule
list, decision tree and linear model fitted on the teacher's probabilities over readable serving-time features, and
the same students on the labels alone, with their test AUC and their fidelity to the teacher.

Readable features: a numeric field in its own units (a missing value as the training mean, plus `<name> missing`),
and for a categorical or multi-valued field one indicator per frequent training value (`gender = F`,
`genres has Drama`), and for fields with many values (user and item ids) each value's smoothed training like rate
(`item_id positive rate`); rarer values and hashed fields have no indicator."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from distil.engine import predict
from distil.explain.config import ExplainConfig
from distil.explain.linear import LinearStudent
from distil.explain.rules import RuleListStudent
from distil.explain.students import Names
from distil.explain.tree import TreeStudent
from distil.tabular.encoders import Encoders, Field
from distil.tabular.metrics import auc

TOP = 12  # indicator columns per categorical / multi-valued field
RATE_ABOVE = 50  # a categorical field with more values (ids, zip codes) also gets its values' training positive rate
SMOOTHING = 20.0  # pseudo-rows at the overall rate behind each value's rate
MAX_ROWS = 20_000  # training rows the students are fitted on (a seeded sample of larger splits)
STUDENTS = {"rules": lambda cfg, seed: RuleListStudent(cfg.rules, 2, seed),
            "tree": lambda cfg, seed: TreeStudent(cfg.tree, 2, seed),
            "linear": lambda cfg, seed: LinearStudent(cfg.linear, 2)}


def frequent_codes(f: Field, train: np.ndarray, top: int) -> list[int]:
    """The `top` most frequent known codes of field `f` in the training rows (OOV and padding excluded)."""
    codes = train[:, f.offset:f.offset + f.width].astype(np.int64).ravel()
    first = 1 if f.kind == "categorical" else 2
    counts = np.bincount(codes, minlength=f.size)
    counts[:first] = 0
    return [int(c) for c in np.argsort(-counts, kind="stable")[:top] if counts[c] > 0]


def positive_rate_maker(f: Field, block: slice, train: np.ndarray, labels: np.ndarray):
    """A feature maker: each row's categorical code -> that value's training positive rate, smoothed towards the
    overall rate with SMOOTHING pseudo-rows (unseen values get the overall rate)."""
    codes = train[:, block][:, 0].astype(np.int64)
    prior = float(labels.mean())
    rate = (np.bincount(codes, weights=labels, minlength=f.size) + SMOOTHING * prior) / \
        (np.bincount(codes, minlength=f.size) + SMOOTHING)
    return lambda x: rate[np.clip(x[:, block][:, 0].astype(np.int64), 0, f.size - 1)]


def readable_features(encoders: Encoders, train: Tensor, labels: np.ndarray, top: int = TOP) -> tuple[list[str],
                                                                                                       list]:
    """The readable feature names and, per feature, how to compute it from encoded rows."""
    names, makers = [], []
    train_np = train.numpy()
    for f in encoders.student_fields():
        block = slice(f.offset, f.offset + f.width)
        if f.kind == "numeric":
            names.append(f.name)
            makers.append(lambda x, f=f, b=block: x[:, b][:, 0] * f.std + f.mean)
            if f.missing_flag:
                names.append(f"{f.name} missing")
                makers.append(lambda x, b=block: x[:, b][:, 1])
            continue
        if f.size > RATE_ABOVE:  # many values (ids): their smoothed training rate of the positive class
            names.append(f"{f.name} positive rate")
            makers.append(positive_rate_maker(f, block, train_np, labels))
        if f.buckets:
            continue  # hashed: no readable values
        value_of = {code: value for value, code in f.vocab.items()}
        for code in frequent_codes(f, train_np, top):
            names.append(f"{f.name} = {value_of[code]}" if f.kind == "categorical" else
                         f"{f.name} has {value_of[code]}")
            makers.append(lambda x, b=block, c=code: (x[:, b] == c).any(1).astype(np.float32))
    return names, makers


def featurize(makers: list, x: Tensor) -> np.ndarray:
    """Encoded rows -> the readable feature matrix (float32)."""
    rows = x.numpy()
    return np.stack([m(rows) for m in makers], 1).astype(np.float32)


def positive_probability(model: nn.Module, dataset, device: torch.device) -> np.ndarray:
    """The model's probability of the positive class on a split."""
    logits = predict(model, dataset, device).double()
    return torch.sigmoid(logits[:, 1] - logits[:, 0]).numpy()


def transparent_students(splits, teacher: nn.Module, kinds: list[str], device: torch.device, seed: int) -> dict:
    """Fit each kind on the teacher's probabilities (distilled) and on the labels (alone); test AUC, fidelity
    (share of test rows where student and teacher pick the same class), size and the distilled student's text."""
    y_train, y_test = splits.train.y.numpy(), splits.test.y.numpy()
    names, makers = readable_features(splits.encoders, splits.train.x, y_train.astype(np.float64))
    rows = np.random.default_rng(seed).permutation(len(y_train))[:MAX_ROWS]
    x_train, x_test = featurize(makers, splits.train.x[rows]), featurize(makers, splits.test.x)
    p_train = positive_probability(teacher, splits.train, device)[rows]
    y_train = y_train[rows]
    p_test = positive_probability(teacher, splits.test, device)
    targets = {"distilled": np.stack([1 - p_train, p_train], 1),
               "alone": np.eye(2)[y_train]}
    cfg, labels = ExplainConfig(), Names(names, list(splits.encoders.class_names))
    out: dict = {"features": len(names), "teacher_auc": auc(y_test, p_test), "students": {}}
    mean, sd = x_train.mean(0), x_train.std(0) + 1e-12
    for kind in kinds:
        row = {}
        scaled = kind == "linear"  # a linear model's weights per standard deviation (year spans ~100 units)
        fit_x, test_x = ((x_train - mean) / sd, (x_test - mean) / sd) if scaled else (x_train, x_test)
        for variant, target in targets.items():
            student = STUDENTS[kind](cfg, seed).fit(fit_x, target)
            q = student.predict_proba(test_x)[:, 1]
            row[variant] = {"auc": auc(y_test, q), "fidelity": float(((q > 0.5) == (p_test > 0.5)).mean()),
                            "size": student.size()}
            if variant == "distilled":
                row["text"] = explain_text(student, labels)
        out["students"][kind] = row
    return out


def explain_text(student, names: Names, top: int = 12) -> list[str]:
    """The rule list, or the linear model's largest weights, or the tree's most important features."""
    if isinstance(student, RuleListStudent):
        return student.text(names)
    if isinstance(student, LinearStudent):
        w = student.weights[1] - student.weights[0]
        order = np.argsort(-np.abs(w))[:top]
        return [f"{names.features[i]}: {w[i]:+.3f} (logit per standard deviation)" for i in order if w[i] != 0]
    importance = student.importance()
    order = np.argsort(-importance)[:top]
    return [f"{names.features[i]}: {importance[i]:.3f} of the splits' impurity decrease" for i in order
            if importance[i] > 0]
