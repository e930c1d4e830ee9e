"""Multi-teacher distillation: several teachers, possibly of other architectures or label subsets, as one source.

Each teacher's probabilities are spread over the dataset's classes and combined per sample. A teacher trained on
a subset (its `classes` map) never saw the other classes, so it is confidently wrong on their samples; like Hinton et
al.'s specialists (2015) it only says how the mass on its own classes divides: its distribution is the full-class
teachers' combination with the mass they give its classes shared out by its probabilities (without a full-class
teacher, zero outside its classes). The rules: `mean` of probabilities, fixed `weights`,
`confidence` (weights ∝ exp(-entropy) of each teacher on that sample, times its fixed weight) or `best` (the
teacher giving the label the highest probability; the most confident one when the label is unknown). The
combination is returned as log-probabilities, which serve as logits: a KD temperature then softens the ensemble.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from distil.batch import Batch
from distil.context import make_model
from distil.data import IndexedTensorDataset, Splits
from distil.errors import DistilError
from distil.methods.base import Outputs
from distil.recipe import LossTerm, MemberConfig
from distil.strategies.augment_distill import augmentation
from distil.strategies.schedules import scheduled_objective
from distil.strategies.tables import Outcome
from distil.strategies.trainer import Trainer
from distil.teachers import LiveTeacher, TeacherSource, as_outputs, freeze

if TYPE_CHECKING:
    from distil.context import RunContext

COMBINE = ("mean", "weights", "confidence", "best")
FLOOR = 1e-8  # smallest probability kept before the log: finite logits for classes a teacher never predicts


def spread(logits: Tensor, classes: Tensor | None, num_classes: int) -> Tensor:
    """A teacher's probabilities over all `num_classes` (zero outside its `classes`, which map its outputs)."""
    probs = logits.float().softmax(-1)
    if classes is None:
        return probs
    full = probs.new_zeros(probs.shape[0], num_classes)
    full[:, classes] = probs
    return full


def within(probs: Tensor, classes: Tensor, base: Tensor) -> Tensor:
    """A specialist's distribution: `base` with the mass it gives `classes` divided by the specialist's `probs`
    (spread over every class, zero outside `classes`)."""
    out = base.clone()
    out[:, classes] = base[:, classes].sum(-1, keepdim=True) * probs[:, classes]
    return out


def combine(probs: Tensor, rule: str, weights: Tensor, target: Tensor | None = None) -> Tensor:
    """Combine (teachers, batch, classes) probabilities into (batch, classes) with `rule` (see the module doc)."""
    t, b, _ = probs.shape
    if rule == "mean":
        w = probs.new_ones(t, b)
    elif rule == "weights":
        w = weights.to(probs).reshape(t, 1).expand(t, b)
    elif rule == "confidence":
        entropy = -(probs * probs.clamp_min(FLOOR).log()).sum(-1)
        w = weights.to(probs).reshape(t, 1) * (-entropy).softmax(0)
    else:  # best
        score = probs.max(-1).values
        if target is not None:
            known = target >= 0
            on_label = probs.gather(-1, target.clamp_min(0).reshape(1, b, 1).expand(t, b, 1)).squeeze(-1)
            score = torch.where(known.reshape(1, b), on_label, score)
        w = torch.nn.functional.one_hot(score.argmax(0), t).T.to(probs)
    combined = (w.unsqueeze(-1) * probs).sum(0) / w.sum(0).unsqueeze(-1)
    return combined / combined.sum(-1, keepdim=True)


class Ensemble(nn.Module):
    """Teachers as one model: forward gives the combined log-probabilities (labels unknown, so `best` picks the most
    confident teacher); used to evaluate the ensemble and to feed EnsembleTeacher."""

    def __init__(self, teachers: Sequence[nn.Module], rule: str = "mean", weights: Sequence[float] | None = None,
                 classes: Sequence[Sequence[int] | None] | None = None, num_classes: int | None = None) -> None:
        super().__init__()
        if rule not in COMBINE:
            raise DistilError(f"combine: '{rule}' is not a rule; use one of {', '.join(COMBINE)}.")
        if not teachers:
            raise DistilError("teachers: an ensemble needs at least one teacher.")
        self.teachers = nn.ModuleList(teachers)
        self.rule = rule
        weights = [1.0] * len(teachers) if weights is None else list(weights)
        classes = [None] * len(teachers) if classes is None else list(classes)
        if len(weights) != len(teachers) or len(classes) != len(teachers):
            raise DistilError("teachers: give one weight and one class map per teacher.")
        self.register_buffer("weights", torch.tensor(weights, dtype=torch.float32), persistent=False)
        self.classes = [None if c is None else torch.as_tensor(list(c), dtype=torch.long) for c in classes]
        if num_classes is None:
            if any(c is not None for c in self.classes):
                raise DistilError("num_classes: teachers with class maps need the dataset's class count.")
        self.num_classes = num_classes

    def combine(self, logits: Sequence[Tensor], target: Tensor | None = None) -> Tensor:
        """Log of the combined distribution of the teachers' logits (one tensor per teacher)."""
        k = self.num_classes or logits[0].shape[-1]
        classes = [None if c is None else c.to(z.device) for z, c in zip(logits, self.classes)]
        probs = [spread(z, c, k) for z, c in zip(logits, classes)]
        full = [i for i, c in enumerate(classes) if c is None]
        if full and len(full) < len(probs):  # specialists share out the full-class teachers' mass on their classes
            base = combine(torch.stack([probs[i] for i in full]), self.rule, self.weights[full], target)
            probs = [p if c is None else within(p, c, base) for p, c in zip(probs, classes)]
        return combine(torch.stack(probs), self.rule, self.weights, target).clamp_min(FLOOR).log()

    def forward(self, x: Tensor) -> Tensor:
        """The ensemble's log-probabilities for x."""
        return self.combine([as_outputs(t(x)).logits for t in self.teachers])


class EnsembleTeacher:
    """A TeacherSource combining several teachers per sample (labels known in training, so `best` can use them);
    the features are those of teacher `features_from`."""

    def __init__(self, ensemble: Ensemble, sources: Sequence[TeacherSource] | None = None,
                 features_from: int = 0) -> None:
        self.model = freeze(ensemble)
        self.sources = list(sources) if sources is not None else [LiveTeacher(t) for t in ensemble.teachers]
        if not 0 <= features_from < len(self.sources):
            raise DistilError(f"distill.features_from: {features_from} is not a teacher; use 0.."
                              f"{len(self.sources) - 1}.")
        self.features_from = features_from

    @classmethod
    def of(cls, teachers: Sequence[nn.Module], combine: str = "mean", weights: Sequence[float] | None = None,
           classes: Sequence[Sequence[int] | None] | None = None, num_classes: int | None = None,
           features_from: int = 0) -> EnsembleTeacher:
        """An ensemble teacher of live models."""
        return cls(Ensemble(teachers, combine, weights, classes, num_classes), features_from=features_from)

    def tap(self, taps: Sequence[str]) -> None:
        """Capture these features (module paths of teacher `features_from`) in every `outputs` from now on."""
        source = self.sources[self.features_from]
        if not hasattr(source, "tap"):
            raise DistilError(f"distill.losses: teacher {self.features_from} of the ensemble cannot give features "
                              f"({type(source).__name__}); use a live teacher for distill.features_from.")
        source.tap(taps)

    def outputs(self, batch: Batch) -> Outputs:
        """The combined teacher outputs for the batch."""
        outs = [s.outputs(batch) for s in self.sources]
        logits = self.model.combine([o.logits for o in outs], batch.y)
        return Outputs(logits, outs[self.features_from].features)


class ClassMapped(nn.Module):
    """A teacher trained on a subset of classes, seen over every class (log-probabilities, floor outside)."""

    def __init__(self, model: nn.Module, classes: Sequence[int], num_classes: int) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("classes", torch.as_tensor(list(classes), dtype=torch.long), persistent=False)
        self.num_classes = num_classes

    def forward(self, x: Tensor) -> Tensor:
        """Log-probabilities over all classes."""
        logits = as_outputs(self.model(x)).logits
        return spread(logits, self.classes, self.num_classes).clamp_min(FLOOR).log()


def class_subset(data: IndexedTensorDataset, classes: Sequence[int]) -> IndexedTensorDataset:
    """The samples of `classes`, relabelled by their position in `classes`."""
    chosen = torch.as_tensor(list(classes), dtype=torch.long)
    position = torch.full((int(max(int(data.y.max()), int(chosen.max()))) + 1,), -1, dtype=torch.long)
    position[chosen] = torch.arange(len(chosen))
    keep = torch.isin(data.y, chosen)
    return IndexedTensorDataset(data.x[keep], position[data.y[keep]])


def subset_splits(splits: Splits, classes: Sequence[int]) -> Splits:
    """The splits restricted to `classes` (relabelled 0..len-1): what a teacher of those classes learns from."""
    return dataclasses.replace(splits, train=class_subset(splits.train, classes), val=class_subset(splits.val, classes),
                               test=class_subset(splits.test, classes), num_classes=len(classes),
                               class_names=[splits.class_names[c] for c in classes])


def member_teacher(run: RunContext, trainer: Trainer, i: int, member: MemberConfig) -> nn.Module:
    """Teacher i of the recipe: loaded from its checkpoint, or trained on the labels (of its classes only)."""

    classes = member.classes
    splits = subset_splits(run.splits, classes) if classes else run.splits
    role = f"teacher_{i}"
    if member.checkpoint:
        return make_model(member, splits, role, checkpoint_path=member.checkpoint,
                          trust_code=run.trusted_code).to(run.device).eval()
    return trainer.with_val(splits.val).fit(f"teach_{i}", lambda: make_model(member, splits, role),
                                            scheduled_objective([LossTerm(name="ce")]), splits.train,
                                            epochs=member.epochs, lr=member.lr, role=role, arch=member, classes=classes)


def run_multi_teacher(run: RunContext) -> Outcome:
    """The multi_teacher strategy in a recipe run: every teacher, their ensemble as the student's teacher, the
    student, and the student alone; the report shows each teacher and the ensemble."""

    r, d = run.recipe, run.recipe.distill
    k = run.splits.num_classes
    trainer = Trainer.for_run(run)
    teachers = [member_teacher(run, trainer, i, m) for i, m in enumerate(d.teachers, 1)]
    ensemble = Ensemble(teachers, d.combine, [m.weight for m in d.teachers], [m.classes for m in d.teachers], k)
    student = trainer.fit("distill", lambda: make_model(r.student, run.splits, "student"),
                          scheduled_objective(d.losses), run.splits.train,
                          teacher=EnsembleTeacher(ensemble, features_from=d.features_from), epochs=d.epochs,
                          batch_transform=augmentation(d.augment), role="student", arch=r.student)
    models: dict[str, nn.Module] = {"teacher": ensemble}
    labels = {"teacher": f"ensemble of {len(teachers)} teachers ({d.combine})"}
    for i, (m, t) in enumerate(zip(d.teachers, teachers), 1):
        models[f"teacher_{i}"] = ClassMapped(t, m.classes, k) if m.classes else t
        labels[f"teacher_{i}"] = f"teacher {i} ({m.name}" + (f", classes {m.classes})" if m.classes else ")")
    models["student"] = student
    if d.baseline:
        models["alone"] = run.alone()
    data = {"combine": d.combine, "weights": [m.weight for m in d.teachers], "classes": [m.classes for m in d.teachers],
            "features_from": d.features_from}
    return Outcome("multi_teacher", ensemble, models, labels, data)
