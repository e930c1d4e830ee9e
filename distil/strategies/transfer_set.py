"""Transfer-set distillation: the student learns the teacher's soft outputs on an unlabeled pool, with or without
the labeled part; pool samples the teacher is unsure of can be skipped (a confidence threshold).

Pool samples carry the target -1: label terms see only labeled samples, teacher terms see every sample (or,
with a threshold, the labeled ones and the pool samples whose teacher top probability reaches it).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from distil.context import make_model
from distil.data import IndexedTensorDataset, Splits, load_dataset
from distil.engine import predict
from distil.errors import DistilError
from distil.methods import Method, Objective
from distil.methods.base import Outputs
from distil.methods.objective import default_methods
from distil.recipe import DataConfig, TrainConfig, UnlabeledConfig
from distil.strategies.augment_distill import augmentation
from distil.strategies.offline import DistillResult, distill
from distil.strategies.schedules import scheduled_objective
from distil.strategies.tables import Outcome, pct, table
from distil.strategies.terms import RowSelect, Rule, labeled
from distil.strategies.trainer import Trainer
from distil.teachers import LiveTeacher

if TYPE_CHECKING:
    from distil.context import RunContext


def unlabeled(x: Tensor) -> IndexedTensorDataset:
    """A pool of inputs without labels (targets -1)."""
    return IndexedTensorDataset(x, torch.full((x.shape[0],), -1, dtype=torch.long))


def transfer_dataset(labeled_part: IndexedTensorDataset | None, pool: IndexedTensorDataset) -> IndexedTensorDataset:
    """The student's training set: the pool, after the labeled samples when they are used."""
    if labeled_part is None:
        return pool
    return IndexedTensorDataset(torch.cat([labeled_part.x, pool.x]), torch.cat([labeled_part.y, pool.y]))


def labeled_or_confident(threshold: float) -> Rule:
    """Keep labeled samples and pool samples whose teacher top probability reaches `threshold`."""

    def keep(student: Outputs, teacher: Outputs | None, target: Tensor) -> Tensor:
        sure = teacher.logits.detach().float().softmax(-1).max(-1).values >= threshold
        return (target >= 0) | sure

    return keep


def transfer_methods(methods: Sequence[Method], use_labels: bool, threshold: float | None) -> list[Method]:
    """The terms as the transfer set needs them: label terms on labeled samples (dropped without labels), teacher
    terms on every sample, or on the confident and labeled ones with a threshold."""
    out: list[Method] = []
    for m in methods:
        if m.needs_teacher:
            out.append(RowSelect(m, labeled_or_confident(threshold)) if threshold is not None else m)
        elif use_labels:
            out.append(RowSelect(m, labeled))
    if not any(m.needs_teacher for m in out):
        raise DistilError("distill.losses: the transfer set needs a teacher term (e.g. {name: kd}); the pool has no "
                          "labels to learn from otherwise.")
    return out


def distill_unlabeled(teacher: nn.Module, student: nn.Module, pool: Tensor | Dataset,
                      labeled_part: Dataset | None = None, val: Dataset | None = None, test: Dataset | None = None,
                      losses: Sequence[Method] | None = None, *, threshold: float | None = None,
                      cfg: TrainConfig | None = None, device: str = "auto", seed: int = 0,
                      quiet: bool = True) -> DistillResult:
    """Distill `teacher` into `student` on the inputs `pool` (a tensor, or a dataset whose labels are ignored),
    after `labeled_part` when given; losses default to 0.5·CE + 0.5·KD(T=4); metrics come from `test`, else `val`."""
    if test is None and val is None:
        raise DistilError("distill_unlabeled: give test or val data with labels to measure the student on.")
    if not isinstance(pool, Tensor):
        pool = torch.stack([pool[i][0] for i in range(len(pool))])
    part = None if labeled_part is None else _as_tensors(labeled_part)
    methods = transfer_methods(list(losses) if losses else default_methods(),
                               part is not None, threshold)
    return distill(teacher, student, transfer_dataset(part, unlabeled(pool)), val, test, methods,
                   train_config=cfg or TrainConfig(), device=device, seed=seed, quiet=quiet)


def _as_tensors(data: Dataset) -> IndexedTensorDataset:
    if isinstance(data, IndexedTensorDataset):
        return data
    items = [data[i] for i in range(len(data))]
    return IndexedTensorDataset(torch.stack([torch.as_tensor(x) for x, _ in items]),
                                torch.as_tensor([int(y) for _, y in items]))


def unlabeled_pool(splits: Splits, cfg: UnlabeledConfig, data: DataConfig) -> tuple[Splits, IndexedTensorDataset,
                                                                                   Tensor | None]:
    """The labeled splits, the unlabeled pool and the pool's hidden labels (None when it is another dataset)."""
    train = splits.train
    if cfg.fraction is not None:
        from sklearn.model_selection import train_test_split  # late import, as in distil.data.splits

        index = np.arange(len(train))
        try:
            keep, held = train_test_split(index, test_size=cfg.fraction, stratify=train.y.numpy(),
                                          random_state=data.split_seed)
        except ValueError:
            keep, held = train_test_split(index, test_size=cfg.fraction, random_state=data.split_seed)
        keep, held = torch.as_tensor(np.sort(keep)), torch.as_tensor(np.sort(held))
        rest = dataclasses.replace(splits, train=IndexedTensorDataset(train.x[keep], train.y[keep]))
        return rest, unlabeled(train.x[held]), train.y[held]
    other = load_dataset(DataConfig(name=cfg.name, path=cfg.path, limit=cfg.limit, normalize=data.normalize,
                                    split_seed=data.split_seed))
    if tuple(other.input_shape) != tuple(splits.input_shape):
        raise DistilError(f"data.unlabeled: the pool '{cfg.name}' has inputs shaped {tuple(other.input_shape)} but "
                          f"the data {tuple(splits.input_shape)}; give a pool of the same input shape.")
    return splits, unlabeled(torch.cat([other.train.x, other.val.x, other.test.x])), None


def run_transfer_set(run: RunContext) -> Outcome:
    """The transfer_set strategy in a recipe run: the teacher (and the student alone) learn from the labeled part,
    the student from the teacher's outputs on the pool (after the labeled part with `distill.labeled`)."""

    r, d = run.recipe, run.recipe.distill
    run.splits, pool, hidden = unlabeled_pool(run.splits, r.data.unlabeled, r.data)
    teacher = run.teach()
    methods = transfer_methods(list(scheduled_objective(d.losses).methods), d.labeled, d.threshold)
    student = Trainer.for_run(run).fit(
        "distill", lambda: make_model(r.student, run.splits, "student"), Objective(methods),
        transfer_dataset(run.splits.train if d.labeled else None, pool), teacher=LiveTeacher(teacher),
        epochs=d.epochs, batch_transform=augmentation(d.augment), role="student", arch=r.student)
    models = {"teacher": teacher, "student": student}
    if d.baseline:
        models["alone"] = run.alone()
    teacher_logits = predict(teacher, pool, run.device)
    sure = None if d.threshold is None else (teacher_logits.softmax(-1).max(-1).values >= d.threshold).float().mean()
    right = None if hidden is None else (teacher_logits.argmax(-1) == hidden).float().mean()
    data = {"labeled": len(run.splits.train), "pool": len(pool), "student_learned_from":
            "labeled part + pool" if d.labeled else "pool only", "threshold": d.threshold,
            "pool_share_kept": None if sure is None else float(sure),
            "teacher_accuracy_on_pool": None if right is None else float(right)}
    rows = [["labeled training samples", str(data["labeled"])], ["unlabeled pool samples", str(data["pool"])],
            ["the student learned from", data["student_learned_from"]],
            ["pool samples kept by the threshold", "all" if sure is None else pct(float(sure))],
            ["teacher accuracy on the pool (hidden labels)", pct(data["teacher_accuracy_on_pool"])]]
    labels = {"teacher": "teacher (labeled part)", "student": "student (transfer set)",
              "alone": "student (alone, labeled part)"}
    return Outcome("transfer_set", teacher, models, labels, data, [table("Transfer set", ["", "value"], rows)])
