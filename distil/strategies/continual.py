"""Continual learning without forgetting: tasks (disjoint class sets) arrive in sequence; before each new task the
current model is frozen as the teacher and the model learns the new labels while distilling the old outputs
(Li & Hoiem, Learning without Forgetting, 2016).

One model with a head over every class is trained task after task. Label terms see the new task's classes
(`scenario: task`) or every class seen so far (`scenario: class`); teacher terms see the old classes only, on
the new task's inputs. Plain fine-tuning (the same steps without the teacher) and joint training on every task
at once are the references. Accuracy on task j counts an answer right when the top class among the task's own
classes (`task`) or among every class seen so far (`class`) is the label. Forgetting after the last step is
the mean, over the earlier tasks, of (best accuracy the task ever had − its final accuracy) (Chaudhry et al., 2018).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from distil.context import make_model
from distil.data import IndexedTensorDataset, as_indexed
from distil.engine import predict
from distil.errors import DistilError
from distil.methods import CE, KD, Method, Objective
from distil.recipe import ModelConfig, TrainConfig
from distil.strategies.schedules import scheduled_objective
from distil.strategies.tables import Outcome, pct, table
from distil.strategies.terms import Columns
from distil.strategies.trainer import Trainer
from distil.teachers import LiveTeacher

if TYPE_CHECKING:
    from distil.context import RunContext


def resolve_tasks(tasks: int | Sequence[Sequence[int]], num_classes: int) -> list[list[int]]:
    """The classes of each task: `tasks` equal consecutive splits of the classes, or the given lists (checked)."""
    if isinstance(tasks, int):
        if not 2 <= tasks <= num_classes:
            raise DistilError(f"distill.tasks: {tasks} tasks cannot split {num_classes} classes; use 2..{num_classes}.")
        return [[int(c) for c in part] for part in np.array_split(np.arange(num_classes), tasks)]
    flat = [c for task in tasks for c in task]
    if len(tasks) < 2 or any(not task for task in tasks):
        raise DistilError("distill.tasks: give at least two non-empty lists of classes, e.g. [[0, 1], [2, 3]].")
    if any(not 0 <= c < num_classes for c in flat) or len(set(flat)) != len(flat):
        raise DistilError(f"distill.tasks: the tasks must name distinct classes among 0..{num_classes - 1}; fix the "
                          "class lists.")
    return [list(task) for task in tasks]


def task_data(data: IndexedTensorDataset, classes: Sequence[int]) -> IndexedTensorDataset:
    """The samples of `classes` (labels unchanged)."""
    keep = torch.isin(data.y, torch.as_tensor(list(classes)))
    return IndexedTensorDataset(data.x[keep], data.y[keep])


def step_objective(methods: Sequence[Method], new: Sequence[int], old: Sequence[int], scenario: str,
                   num_classes: int, distill: bool) -> Objective:
    """One task step's objective: label terms on the new (or every seen) class, teacher terms on the old classes
    (dropped on the first task and for plain fine-tuning)."""
    label_classes = list(new) if scenario == "task" else [*old, *new]
    out: list[Method] = []
    for m in methods:
        if not m.needs_teacher:
            out.append(Columns(m, label_classes, num_classes))
        elif distill and old:
            out.append(Columns(m, old, num_classes))
    return Objective(out)


def task_accuracy(model: nn.Module, data: IndexedTensorDataset, classes: Sequence[int], device: torch.device) -> float:
    """The share of `data` whose top class among `classes` is its label."""
    if len(data) == 0:
        return float("nan")
    chosen = torch.as_tensor(list(classes))
    predicted = chosen[predict(model, data, device)[:, chosen].argmax(-1)]
    return (predicted == data.y).float().mean().item()


def accuracies(model: nn.Module, tests: Sequence[IndexedTensorDataset], tasks: Sequence[Sequence[int]], step: int,
               scenario: str, device: torch.device) -> list[float]:
    """Accuracy on tasks 0..step after that step."""
    seen = [c for task in tasks[:step + 1] for c in task]
    return [task_accuracy(model, tests[j], tasks[j] if scenario == "task" else seen, device) for j in range(step + 1)]


def forgetting(matrix: Sequence[Sequence[float]]) -> float:
    """Mean over the earlier tasks of (best accuracy before the last step − accuracy after it)."""
    last = len(matrix) - 1
    drops = [max(matrix[s][j] for s in range(j, last)) - matrix[last][j] for j in range(last)]
    return float(np.mean(drops)) if drops else 0.0


@dataclass
class ContinualResult:
    """The model after the last task, the accuracy matrix (row: after step t, column: task j ≤ t), the final mean
    accuracy and the forgetting."""

    model: nn.Module
    accuracy: list[list[float]] = field(default_factory=list)
    average: float = 0.0
    forgetting: float = 0.0


def learn_tasks(trainer: Trainer, start: nn.Module, methods: Callable[[], list[Method]],
                trains: Sequence[IndexedTensorDataset], vals: Sequence[Dataset | None],
                tests: Sequence[IndexedTensorDataset], tasks: Sequence[Sequence[int]], scenario: str, num_classes: int,
                *, distill: bool, epochs: int | None = None, prefix: str = "lwf", roles: Sequence[str | None] = (),
                arch: ModelConfig | None = None) -> ContinualResult:
    """Tasks 2..T from `start` (a model that has learned task 1): with the previous model as teacher (`distill`)
    or without it (plain fine-tuning)."""
    roles = list(roles) or [None] * len(tasks)
    model = start
    matrix = [accuracies(model, tests, tasks, 0, scenario, trainer.device)]
    for t in range(1, len(tasks)):
        old = [c for task in tasks[:t] for c in task]
        teacher = LiveTeacher(copy.deepcopy(model)) if distill else None
        objective = step_objective(methods(), tasks[t], old, scenario, num_classes, distill)
        model = trainer.with_val(vals[t]).fit(f"{prefix}_task_{t + 1}", lambda prev=model: copy.deepcopy(prev),
                                              objective, trains[t], teacher=teacher, epochs=epochs, role=roles[t],
                                              arch=arch)
        matrix.append(accuracies(model, tests, tasks, t, scenario, trainer.device))
    return ContinualResult(model, matrix, float(np.mean(matrix[-1])), forgetting(matrix))


def learn_without_forgetting(model: nn.Module, train: Dataset, test: Dataset, tasks: int | Sequence[Sequence[int]],
                             losses: Sequence[Method] | None = None, *, scenario: str = "task", distill: bool = True,
                             cfg: TrainConfig | None = None, device: str = "auto", seed: int = 0,
                             quiet: bool = True) -> ContinualResult:
    """Train `model` (one output per class) on the tasks in order, distilling the old outputs at every new task
    (`distill=False`: plain fine-tuning); losses default to CE + KD(T=2), weight 1 each, as in LwF."""
    train, test = as_indexed(train), as_indexed(test)
    if not isinstance(train, IndexedTensorDataset) or not isinstance(test, IndexedTensorDataset):
        raise DistilError("learn_without_forgetting: give train and test as tensor datasets (TensorDataset(x, y)).")
    num_classes = int(torch.cat([train.y, test.y]).max()) + 1
    tasks = resolve_tasks(tasks, num_classes)
    base = list(losses) if losses else [CE(weight=1.0), KD(weight=1.0, temperature=2.0)]
    methods = lambda: copy.deepcopy(base)  # noqa: E731  (fresh terms for every step)
    trainer = Trainer.standalone(cfg, device, seed, None, quiet)
    trains, tests = [task_data(train, c) for c in tasks], [task_data(test, c) for c in tasks]
    first = trainer.fit("task_1", lambda: model, step_objective(methods(), tasks[0], [], scenario, num_classes, False),
                        trains[0])
    return learn_tasks(trainer, first, methods, trains, [None] * len(tasks), tests, tasks, scenario, num_classes,
                       distill=distill)


def run_continual(run: RunContext) -> Outcome:
    """The continual strategy in a recipe run: the student learns the tasks in order with LwF, with plain
    fine-tuning, and jointly; the report gives every task's accuracy after every step and the forgetting."""

    r, d, s = run.recipe, run.recipe.distill, run.splits
    k = s.num_classes
    tasks = resolve_tasks(d.tasks, k)
    trains, vals, tests = ([task_data(part, c) for c in tasks] for part in (s.train, s.val, s.test))
    trainer = Trainer.for_run(run)
    methods = lambda: list(scheduled_objective(d.losses).methods)  # noqa: E731  (fresh terms for every step)
    build = lambda: make_model(r.student, s, "student")  # noqa: E731
    first_objective = step_objective(methods(), tasks[0], [], d.scenario, k, False)
    first = trainer.with_val(vals[0]).fit("task_1", build, first_objective, trains[0], epochs=d.epochs, role="task_1",
                                          arch=r.student)
    n = len(tasks)
    runs = {}
    for prefix, final, distill in (("lwf", "student", True), ("plain", "plain", False)):
        roles = [None] + [f"{prefix}_task_{t}" for t in range(2, n)] + [final]
        runs[prefix] = learn_tasks(trainer, first, methods, trains, vals, tests, tasks, d.scenario, k,
                                   distill=distill, epochs=d.epochs, prefix=prefix, roles=roles, arch=r.student)
    every = [c for task in tasks for c in task]
    joint_objective = Objective([Columns(m, every, k) for m in methods() if not m.needs_teacher])
    joint = trainer.fit("joint", build, joint_objective, task_data(s.train, every), epochs=d.epochs, role="joint",
                        arch=r.student)
    joint_row = [task_accuracy(joint, tests[j], tasks[j] if d.scenario == "task" else every, run.device)
                 for j in range(n)]
    data = {"tasks": tasks, "scenario": d.scenario, "joint": joint_row,
            **{name: {"accuracy": res.accuracy, "average": res.average, "forgetting": res.forgetting}
               for name, res in runs.items()}}
    columns = ["after step", *[f"task {j + 1}" for j in range(n)]]
    tables = []
    for name, title in (("lwf", "learning without forgetting"), ("plain", "plain fine-tuning")):
        rows = [[f"task {t + 1}", *[pct(a) for a in row], *["-"] * (n - len(row))]
                for t, row in enumerate(runs[name].accuracy)]
        tables.append(table(f"Accuracy per task, {title} ({d.scenario} scenario)", columns, rows))
    summary = [[title, pct(runs[name].average), f"{100 * runs[name].forgetting:.2f}"]
               for name, title in (("lwf", "learning without forgetting"), ("plain", "plain fine-tuning"))]
    summary.append(["joint training (all tasks at once)", pct(float(np.mean(joint_row))), "-"])
    tables.append(table("After the last task", ["method", "mean accuracy over tasks", "forgetting (points)"],
                        summary, note=f"Tasks (classes): {tasks}; accuracy within each task's classes"
                        if d.scenario == "task" else f"Tasks (classes): {tasks}; accuracy among every class seen."))
    labels = {"student": "student (learning without forgetting)", "plain": "student (plain fine-tuning)",
              "joint": "student (joint training)"}
    return Outcome("continual", None, {"student": runs["lwf"].model, "plain": runs["plain"].model, "joint": joint},
                   labels, data, tables)
