"""Online distillation (deep mutual learning): several models trained together from scratch, each learning from the
others' outputs as they train; optionally a larger online teacher joins the cohort.

The cohort is one module, so one engine Fit trains every member at once. Each member k learns the recipe's
terms with every other member j as its teacher (j's outputs detached), averaged over the others:
loss_k = Σ_{j≠k} terms(k, j) / (K-1) — label terms thus count once — and the cohort minimises Σ_k loss_k
(Zhang et al., Deep Mutual Learning, 2018).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from distil.context import make_model
from distil.data import as_indexed
from distil.errors import DistilError
from distil.methods import CE, KD, Method, Objective
from distil.methods.base import Outputs
from distil.recipe import TrainConfig
from distil.strategies.augment_distill import augmentation
from distil.strategies.schedules import scheduled_objective
from distil.strategies.tables import Outcome
from distil.strategies.trainer import Trainer, score
from distil.teachers import as_outputs

if TYPE_CHECKING:
    from distil.context import RunContext


def member_key(k: int) -> str:
    """The feature name under which the cohort gives member k's logits."""
    return f"member.{k}"


class Cohort(nn.Module):
    """Models trained together: forward gives member 0's logits, and every member's logits as features."""

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if len(members) < 2:
            raise DistilError("online: mutual learning needs at least two models; set distill.peers >= 1.")
        self.members = nn.ModuleList(members)

    def forward(self, x: Tensor) -> Outputs:
        """Member 0's logits (what validation and prediction see) with all members' logits as features."""
        logits = [as_outputs(m(x)).logits for m in self.members]
        return Outputs(logits[0], {member_key(k): z for k, z in enumerate(logits)})


class MutualObjective(Objective):
    """The cohort's loss: each member learns the given methods from every other member (see the module doc)."""

    def __init__(self, methods: Sequence[Method], members: int) -> None:
        super().__init__(methods)
        self.members = members

    @property
    def needs_teacher(self) -> bool:
        """The peers are the teachers: no outside teacher is needed."""
        return False

    def forward(self, student: Outputs, teacher: Outputs | None, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Σ over members of their terms against each peer, averaged over peers; terms averaged over all pairs."""
        logits = [student.features[member_key(k)] for k in range(self.members)]
        pairs = self.members * (self.members - 1)
        total = torch.zeros((), device=student.logits.device)
        sums: dict[str, Tensor] = {}
        for k, own in enumerate(logits):
            for j, peer in enumerate(logits):
                if j == k:
                    continue
                loss, terms = super().forward(Outputs(own), Outputs(peer.detach()), target)
                total = total + loss / (self.members - 1)
                for name, value in terms.items():
                    sums[name] = sums.get(name, 0) + value / pairs
        return total, sums


@dataclass
class MutualResult:
    """The models trained together, each one's metrics on the held-out data, and the training history."""

    models: list[nn.Module]
    metrics: list[dict[str, float]]
    history: list[dict] = field(default_factory=list)


def mutual_learning(models: Sequence[nn.Module], train: Dataset, val: Dataset | None = None,
                    test: Dataset | None = None, losses: Sequence[Method] | None = None, *,
                    cfg: TrainConfig | None = None, device: str = "auto", seed: int = 0,
                    quiet: bool = True) -> MutualResult:
    """Train `models` together from their current weights, each learning from the others (default: CE + KD at T=1
    with weight 1 each, as in DML); metrics come from `test`, else `val`, else `train`."""
    trainer = Trainer.standalone(cfg, device, seed, val, quiet)
    methods = list(losses) if losses else [CE(weight=1.0), KD(weight=1.0, temperature=1.0)]
    cohort = Cohort(list(models))
    objective = MutualObjective(methods, len(cohort.members))
    trained = trainer.fit("online", lambda: cohort, objective, as_indexed(train))
    held_out = as_indexed(test if test is not None else val if val is not None else train)
    members = list(trained.members)
    return MutualResult(members, [score(m, held_out, trainer.device) for m in members], trainer.histories["online"])


def run_online(run: RunContext) -> Outcome:
    """The online strategy in a recipe run: the student, `distill.peers` copies and (with `distill.online_teacher`)
    the teacher architecture train together; the student trained alone is the baseline."""

    r, d = run.recipe, run.recipe.distill
    archs = [r.student] * (1 + d.peers) + ([r.teacher] if d.online_teacher else [])
    roles = ["student"] + [f"peer_{k}" for k in range(1, d.peers + 1)] + (["teacher"] if d.online_teacher else [])
    trainer = Trainer.for_run(run)
    finished = [trainer.finished(role) for role in roles]
    if all(m is not None for m in finished):
        members = finished
    else:
        objective = MutualObjective(list(scheduled_objective(d.losses).methods), len(archs))

        def build() -> Cohort:
            return Cohort([make_model(arch, run.splits, role) for arch, role in zip(archs, roles)])

        cohort = trainer.fit("online", build, objective, run.splits.train, epochs=d.epochs,
                             batch_transform=augmentation(d.augment))
        members = list(cohort.members)
        for role, arch, member in zip(roles, archs, members):
            run.save_model(role, member, arch)
    models = dict(zip(roles, members))
    if d.baseline:
        models["alone"] = run.alone()
    labels = {"student": "student (mutual learning)", "teacher": "online teacher (trained jointly)",
              **{role: f"peer {role.removeprefix('peer_')} (mutual learning)" for role in roles if "peer" in role}}
    return Outcome("online", models.get("teacher"), models, labels,
                   data={"members": roles, "peers": d.peers, "online_teacher": d.online_teacher})
