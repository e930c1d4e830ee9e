"""What the engine measures on the student before it trains: the learning rate (`train.lr: auto`, a range test) and
the loss weights of `weight: auto` terms (each term's gradient set to a ratio of the label loss's).

Both measure the real objective on real batches of the stage and leave no trace: the caller runs them on a snapshot
of the model, the objective and the RNG states, restored afterwards, so training starts from the same point.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

RANGE_STEPS = 100  # fastai's lr_find default (num_it=100)
MIN_RANGE_STEPS = 30  # a stage shorter than RANGE_STEPS gets a test as long as itself, but not shorter than this
RANGE = {"adamw": (1e-6, 1.0), "sgd": (1e-5, 10.0)}  # lowest and highest lr tried, per optimizer
SMOOTHING = 0.9  # exponential moving average of the loss (bias-corrected)
DIVERGED = 4.0  # stop once the smoothed loss is this many times its minimum
BALANCE_BATCHES = 4  # batches the gradient norms of `weight: auto` are averaged over


@dataclass
class RangeTest:
    """The learning-rate range test of a stage: the lrs tried, the smoothed loss at each, and the lr chosen."""

    lrs: list[float]
    losses: list[float]
    lr: float

    def record(self, stage: str) -> dict:
        """The metrics.jsonl line of this test."""
        return {"stage": f"{stage}:lr_find", "lr": self.lr, "lrs": self.lrs, "losses": self.losses}


PICK_DIVISOR = 10.0  # fastai's lr_min: a tenth of the lr at the smoothed loss's minimum
DESCENT_SHARE = 0.5  # the middle of the descent: the loss has fallen half way from its first value to its minimum
MIN_DESCENT = 0.2  # the share of its first value the loss must fall by for the middle of the descent to count


def pick_lr(lrs: Sequence[float], losses: Sequence[float]) -> float:
    """The lower of a tenth of the lr at the smoothed loss's minimum (fastai's `lr_min`: short of the edge where the
    loss turns up, still fast) and the lr at the middle of the descent (where the loss has fallen half way from its
    first value to its minimum), when the loss falls by at least MIN_DESCENT of its first value (on a short, noisy
    curve that falls less, the plateau's noise crosses the half-way level before the descent does).

    The cap matters when the minimum lies past a bump: the loss first turns up, then falls again at rates that are
    already unstable, because steps keep accumulating. There a tenth of the minimum's lr lands anywhere from before
    the bump to past it from one seed to the next (Fashion-MNIST's MobileNetV2 alone: 0.0027, 0.043, 0.050 over three
    seeds; 0.0027 to 0.0087 with the cap). On curves that fall steeply just before their minimum (digits,
    benchmarks/api_defaults.py) the tenth is the lower one and the pick is fastai's.
    """
    best = min(range(len(losses)), key=losses.__getitem__)
    middle = losses[0] - DESCENT_SHARE * (losses[0] - losses[best])
    tenth = lrs[best] / PICK_DIVISOR
    if not losses[best] < (1 - MIN_DESCENT) * losses[0]:
        return tenth  # no clear descent to find the middle of (a short, noisy curve)
    return min(tenth, lrs[next(i for i in range(best + 1) if losses[i] <= middle)])


def range_test(loss_at: Callable[[int], Tensor], optimizer: torch.optim.Optimizer, low: float, high: float,
               steps: int = RANGE_STEPS, grad_clip: float | None = None) -> RangeTest:
    """Train with an lr rising exponentially from `low` to `high` over `steps` steps (`loss_at(i)` is step i's
    loss) until the smoothed loss diverges; return the curve and the lr `pick_lr` chooses from it."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    lrs: list[float] = []
    losses: list[float] = []
    average, best = 0.0, math.inf
    for i in range(steps):
        lr = low * (high / low) ** (i / max(1, steps - 1))
        for group in optimizer.param_groups:
            group["lr"] = lr
        loss = loss_at(i)
        value = float(loss.detach())
        if not math.isfinite(value):
            break
        loss.backward()
        if grad_clip:
            nn.utils.clip_grad_norm_(params, grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        average = SMOOTHING * average + (1 - SMOOTHING) * value
        smoothed = average / (1 - SMOOTHING ** (i + 1))
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if smoothed > DIVERGED * best:
            break
    if not losses:
        return RangeTest([], [], low)
    return RangeTest(lrs, losses, pick_lr(lrs, losses))


@dataclass
class Balance:
    """`weight: auto` terms: each one's measured gradient norm, the reference it was scaled to, the weight set."""

    weights: dict[str, float] = field(default_factory=dict)
    norms: dict[str, float] = field(default_factory=dict)
    reference: str = ""
    reference_norm: float = 0.0

    def record(self, stage: str) -> dict:
        """The metrics.jsonl line of this balance."""
        return {"stage": f"{stage}:balance", "weights": self.weights, "grad_norms": self.norms,
                "reference": self.reference, "reference_norm": self.reference_norm}


def grad_norm(value: Tensor, params: Sequence[nn.Parameter]) -> float:
    """|d value / d params| (L2 over every parameter; parameters it does not reach count as 0)."""
    if not value.requires_grad:
        return 0.0
    grads = torch.autograd.grad(value, list(params), retain_graph=True, allow_unused=True)
    norms = [g.detach().float().norm() for g in grads if g is not None]
    return float(torch.stack(norms).norm()) if norms else 0.0


def balance(methods: Sequence[nn.Module], names: Sequence[str], values_at: Callable[[int], list[Tensor]],
            params: Sequence[nn.Parameter], batches: int = BALANCE_BATCHES) -> Balance | None:
    """Set the weight of every `weight: auto` term (a method whose `ratio` is not None) so that its mean gradient
    norm on `params` over `batches` batches is `ratio` times the reference's: the weighted label terms (those that
    need no teacher), else the fixed-weight teacher terms. None when no term is auto.

    `values_at(b)` gives batch b's unweighted term values (with their graphs), in `methods` order. Without a
    reference, or for a term whose gradient is zero, the weight stays 1.
    """
    ratios = [getattr(m, "ratio", None) for m in methods]
    auto = [i for i, r in enumerate(ratios) if r is not None]
    if not auto:
        return None
    fixed = [i for i, r in enumerate(ratios) if r is None]
    reference = [i for i in fixed if not methods[i].needs_teacher] or fixed
    sums = dict.fromkeys(auto, 0.0)
    ref_norm = 0.0
    for b in range(batches):
        values = values_at(b)
        for i in auto:
            sums[i] += grad_norm(values[i], params) / batches
        if reference:
            ref_norm += grad_norm(sum(methods[i].weight * values[i] for i in reference), params) / batches
    result = Balance(reference=" + ".join(names[i] for i in reference), reference_norm=ref_norm)
    for i in auto:
        method, norm = methods[i], sums[i]
        method.weight = method.ratio * ref_norm / norm if norm > 0 and ref_norm > 0 else 1.0
        result.weights[names[i]] = method.weight
        result.norms[names[i]] = norm
    return result


def cycle(make: Callable[[int], Iterator]) -> Iterator:
    """Endless batches: `make(round)` gives one pass, called again for each further round."""
    round_ = 0
    while True:
        empty = True
        for item in make(round_):
            empty = False
            yield item
        if empty:
            return
        round_ += 1
