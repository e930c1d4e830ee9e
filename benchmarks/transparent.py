"""Transparent students (tree, linear, rules, soft tree), labels alone vs distilled from an MLP teacher, 3 seeds,
on digits and on scikit-learn's breast cancer table: accuracy, fidelity to the teacher, perturbed fidelity, size.

Run: .venv/bin/python benchmarks/transparent.py   (writes benchmarks/results/transparent.md)
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from distil.checkpoint import atomic_write_text
from distil.data import IndexedTensorDataset, Splits, load_dataset
from distil.engine import Fit, seed_everything
from distil.explain.bundle import Explained
from distil.explain.config import ExplainConfig
from distil.explain.stage import Setting, fit_students
from distil.explain.summary import size_text
from distil.methods import build_objective
from distil.models import build_model
from distil.recipe import DataConfig, LossTerm, ModelConfig, TrainConfig

SEEDS = (0, 1, 2)
TRAIN = TrainConfig(epochs=80, batch_size=64, lr=3e-3, weight_decay=1e-4)  # the default recipe's epochs
LOSSES = [LossTerm(name="ce", weight=0.1), LossTerm(name="kd", weight=0.9, temperature=4.0)]
TEACHERS = {"digits": ModelConfig(name="mlp", hidden=[256, 256], dropout=0.1),
            "breast_cancer": ModelConfig(name="mlp", hidden=[64, 64], dropout=0.1)}
METRICS = [("top1", "top-1"), ("fidelity", "fidelity"), ("fidelity_perturbed", "perturbed fidelity")]


def breast_cancer_splits() -> tuple[Splits, list[str]]:
    """scikit-learn's breast cancer table as Splits (stratified 70/10/20, standardized with train statistics)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.model_selection import train_test_split

    bunch = load_breast_cancer()
    x, y = bunch.data.astype(np.float32), bunch.target.astype(np.int64)
    index = np.arange(len(y))
    pool, test = train_test_split(index, test_size=0.2, stratify=y, random_state=0)
    train, val = train_test_split(pool, test_size=round(0.1 * len(y)), stratify=y[pool], random_state=0)
    mean, std = x[train].mean(0), x[train].std(0)

    def part(rows: np.ndarray) -> IndexedTensorDataset:
        return IndexedTensorDataset(torch.from_numpy((x[rows] - mean) / std), torch.from_numpy(y[rows]))

    splits = Splits(part(train), part(val), part(test), num_classes=2, input_shape=(x.shape[1],),
                    class_names=[str(n) for n in bunch.target_names], name="breast_cancer")
    return splits, [str(n) for n in bunch.feature_names]


def dataset(name: str) -> tuple[Splits, list[str] | None]:
    """The splits of a benchmark dataset and its feature names (None: generated names)."""
    if name == "digits":
        return load_dataset(DataConfig(name="digits")), None
    return breast_cancer_splits()


def one_seed(splits: Splits, names: list[str] | None, teacher_cfg: ModelConfig, seed: int) -> Explained:
    """Train the teacher on the labels, then fit every transparent student alone and distilled."""
    device = torch.device("cpu")
    seed_everything(seed)
    teacher = build_model(teacher_cfg, splits.input_shape, splits.num_classes)
    teacher = Fit(stage="teach", model=teacher, objective=build_objective([LossTerm(name="ce")]), train=splits.train,
                  val=splits.val, cfg=TRAIN, device=device, seed=seed, quiet=True).run().model
    return fit_students(Setting(teacher=teacher, splits=splits, cfg=ExplainConfig(), losses=LOSSES, train=TRAIN,
                                device=device, seed=seed, feature_names=names))


def mean_std(values: list[float]) -> str:
    """'mean ± std' in percent."""
    return f"{100 * statistics.mean(values):.2f} ± {100 * statistics.stdev(values):.2f}"


def table(runs: list[Explained]) -> list[str]:
    """One markdown row per student: each metric alone and distilled (mean ± std over seeds), sizes of seed 0."""
    head = ["student"] + [f"{label} {v}" for _, label in METRICS for v in ("alone", "distilled")]
    lines = ["| " + " | ".join(head + ["size alone (seed 0)", "size distilled (seed 0)"]) + " |",
             "|---|" + "---:|" * (len(head) - 1) + "---|---|"]
    for kind, first in runs[0].results["students"].items():
        cells = [kind]
        for key, _ in METRICS:
            for variant in ("alone", "distilled"):
                cells.append(mean_std([r.results["students"][kind][variant][key] for r in runs]))
        cells += [size_text(first["alone"]["size"]), size_text(first["distilled"]["size"])]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def main() -> None:
    """Every dataset and seed, then the summary written to benchmarks/results/transparent.md."""
    torch.set_num_threads(1)  # tiny tensors: one thread is fastest and does not fight other processes
    cfg = ExplainConfig()
    lines = [
        "# Transparent students: labels alone vs distilled from the teacher, 3 seeds",
        "",
        "Command: `.venv/bin/python benchmarks/transparent.py` (seeds 0, 1, 2; CPU, one thread).",
        "",
        f"Teacher: an MLP trained on the labels ({TRAIN.epochs} epochs, AdamW lr {TRAIN.lr}). Each student is "
        "fitted on the training labels alone, and distilled: on the training inputs plus "
        f"{cfg.query_points} query points ({cfg.query_mix:.0%} mixup, the rest Gaussian noise of "
        f"{cfg.query_noise} feature-std) labelled by the teacher; tree / rules / linear fit the teacher's "
        f"probabilities (T={cfg.temperature:g}), the soft tree (depth {cfg.soft_tree.depth}, penalty "
        f"{cfg.soft_tree.penalty:g}, lr {cfg.soft_tree.lr:g}, {TRAIN.epochs} epochs) trains on the engine with "
        f"0.1·CE + 0.9·soft_tree_kd (Frosst & Hinton's loss on the teacher's probabilities at T={cfg.temperature:g}),"
        " alone with CE. Default `explain` settings otherwise: tree depth ≤ "
        f"{cfg.tree.max_depth} and ≤ {cfg.tree.max_leaf_nodes} leaves, rules read from a tree of ≤ "
        f"{cfg.rules.max_rules} leaves, linear with L2 {cfg.linear.l2:g}. Fidelity = agreement with the teacher's "
        f"class on the test split; perturbed = on test inputs plus Gaussian noise of {cfg.test_noise} feature-std. "
        "Values are mean ± std in percent.",
        "",
    ]
    for name, teacher_cfg in TEACHERS.items():
        splits, names = dataset(name)
        runs = []
        for seed in SEEDS:
            start = time.perf_counter()
            runs.append(one_seed(splits, names, teacher_cfg, seed))
            print(f"{name} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
        teacher = mean_std([r.results["teacher"]["top1"] for r in runs])
        lines += [f"## {name} ({len(splits.train)} train / {len(splits.test)} test, {splits.num_classes} classes, "
                  f"{int(np.prod(splits.input_shape))} features)", "",
                  f"Teacher ({teacher_cfg.name} {teacher_cfg.hidden}) top-1: {teacher}.", "", *table(runs), ""]
    out = Path(__file__).parent / "results" / "transparent.md"
    atomic_write_text(out, "\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
