"""Self-distillation (born-again networks): generation 0 of an architecture learns from the labels, then each
generation k+1 of the same architecture learns from generation k; the mean of the generations' probabilities
(generations 1..N) can serve as a final ensemble (Furlanello et al., Born-Again Neural Networks, 2018).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from torch import nn
from torch.utils.data import Dataset

from distil.context import make_model
from distil.data import as_indexed
from distil.methods import CE, Method, Objective
from distil.methods.objective import default_methods
from distil.recipe import ModelConfig, TrainConfig
from distil.strategies.augment_distill import augmentation
from distil.strategies.multi_teacher import Ensemble
from distil.strategies.schedules import label_terms, scheduled_objective
from distil.strategies.tables import Outcome, pct, table
from distil.strategies.trainer import Trainer, Transform, score
from distil.teachers import LiveTeacher

if TYPE_CHECKING:
    from distil.context import RunContext


def train_generations(trainer: Trainer, build: Callable[[], nn.Module], labels_only: Callable[[], Objective],
                      distill: Callable[[], Objective], train: Dataset, generations: int, *, epochs: int | None = None,
                      transform: Transform | None = None, roles: Sequence[str] | None = None,
                      arch: ModelConfig | None = None) -> list[nn.Module]:
    """Generation 0 on `labels_only`, then `generations` more, each against `distill` with the previous one as
    its teacher; every generation starts from the same seeded initialisation. Returns all generations."""
    roles = list(roles) if roles is not None else [None] * (generations + 1)
    models = [trainer.fit("gen_0", build, labels_only(), train, epochs=epochs, role=roles[0], arch=arch)]
    for k in range(1, generations + 1):
        teacher = LiveTeacher(copy.deepcopy(models[-1]))
        models.append(trainer.fit(f"gen_{k}", build, distill(), train, teacher=teacher, epochs=epochs,
                                  batch_transform=transform, role=roles[k], arch=arch))
    return models


@dataclass
class GenerationsResult:
    """Every generation (0 = labels only), the ensemble of generations 1..N, and each one's held-out metrics."""

    models: list[nn.Module]
    ensemble: nn.Module
    metrics: list[dict[str, float]] = field(default_factory=list)
    ensemble_metrics: dict[str, float] = field(default_factory=dict)


def born_again(build: Callable[[], nn.Module], train: Dataset, val: Dataset | None = None,
               test: Dataset | None = None, losses: Sequence[Method] | None = None, *, generations: int = 3,
               cfg: TrainConfig | None = None, device: str = "auto", seed: int = 0,
               quiet: bool = True) -> GenerationsResult:
    """Born-again training of the model `build()` makes: the label terms of `losses` (default 0.5·CE + 0.5·KD(T=4))
    train generation 0, all of them the next `generations`; metrics come from `test`, else `val`, else `train`."""
    trainer = Trainer.standalone(cfg, device, seed, val, quiet)
    methods = list(losses) if losses else default_methods()
    label_methods = [m for m in methods if not m.needs_teacher] or [CE()]
    models = train_generations(trainer, build, lambda: Objective(copy.deepcopy(label_methods)),
                               lambda: Objective(copy.deepcopy(methods)), as_indexed(train), generations)
    ensemble = Ensemble(models[1:], "mean").eval()
    held_out = as_indexed(test if test is not None else val if val is not None else train)
    return GenerationsResult(models, ensemble, [score(m, held_out, trainer.device) for m in models],
                             score(ensemble, held_out, trainer.device))


def run_self(run: RunContext) -> Outcome:
    """The self strategy in a recipe run: generation 0 of the student (saved as the teacher), generations 1..N
    (the last is the student), optionally their ensemble; the report lists each generation."""

    r, d = run.recipe, run.recipe.distill
    n = d.generations
    roles = ["teacher"] + [f"gen_{k}" for k in range(1, n)] + ["student"]
    models = train_generations(Trainer.for_run(run), lambda: make_model(r.student, run.splits, "student"),
                               lambda: scheduled_objective(label_terms(d.losses)),
                               lambda: scheduled_objective(d.losses), run.splits.train, n, epochs=d.epochs,
                               transform=augmentation(d.augment), roles=roles, arch=r.student)
    evaluated = dict(zip(roles, models))
    labels = {"teacher": "generation 0 (labels only)", "student": f"generation {n} (student)",
              **{f"gen_{k}": f"generation {k}" for k in range(1, n)}}
    if d.ensemble:
        evaluated["ensemble"] = Ensemble(models[1:], "mean").eval()
        labels["ensemble"] = f"ensemble of generations 1..{n}"
    return Outcome("self", models[0], evaluated, labels, data={"generations": n},
                   derive=lambda results: [generation_table(results)])


def generation_table(results: dict) -> dict:
    """Each generation's test accuracy and its change from the previous generation."""
    models = results["models"]
    rows, previous = [], None
    for role, m in models.items():
        if role in {"teacher", "student", "ensemble"} or role.startswith("gen_"):
            delta = "-" if previous is None or role == "ensemble" else f"{100 * (m['top1'] - previous):+.2f}"
            rows.append([m["label"], pct(m["top1"]), f"{m['f1']:.4f}", delta])
            previous = m["top1"] if role != "ensemble" else previous
    return table("Generations (test split)", ["model", "top-1", "macro-F1", "Δ top-1 vs previous (points)"], rows)
