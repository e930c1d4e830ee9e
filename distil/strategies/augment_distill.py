"""Augmentation for distillation: new inputs the teacher labels — mixup / cutmix of training pairs, and adversarial
samples of the student near its decision boundary (FGSM, PGD).

Each is a batch transform the engine applies after `prepare_batch` and before the teacher runs, so the teacher
(always live: a cache only knows the original samples) gives its soft outputs on exactly the new inputs. A mixed
sample keeps the label of its larger share and an adversarial one the label of its source (unlabeled ones,
target -1, attack the student's own prediction). With `keep_clean` the new inputs are appended to the batch.
Randomness comes from torch's seeded generator, so runs repeat and resume exactly.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from distil.batch import Batch
from distil.recipe import DistillAugmentConfig
from distil.teachers import as_outputs


def _join(clean: Batch, new: Batch, keep_clean: bool) -> Batch:
    if not keep_clean:
        return new
    return Batch(torch.cat([clean.index, new.index]), torch.cat([clean.x, new.x]), torch.cat([clean.y, new.y]),
                 clean.view)


class Mixup:
    """x' = λ·x_i + (1-λ)·x_j with a random partner j and λ ~ Beta(α, α) per sample (folded to λ ≥ 1/2)."""

    def __init__(self, alpha: float = 1.0, keep_clean: bool = True) -> None:
        self.alpha, self.keep_clean = alpha, keep_clean

    def __call__(self, batch: Batch, model: nn.Module) -> Batch:
        """The batch with its mixed copy."""
        n = batch.x.shape[0]
        lam = torch.distributions.Beta(self.alpha, self.alpha).sample((n,))
        lam = torch.maximum(lam, 1 - lam).to(batch.x.device, batch.x.dtype)
        partner = torch.randperm(n).to(batch.x.device)
        shape = (n, *([1] * (batch.x.dim() - 1)))
        mixed = lam.reshape(shape) * batch.x + (1 - lam.reshape(shape)) * batch.x[partner]
        return _join(batch, Batch(batch.index, mixed, batch.y, batch.view), self.keep_clean)


class CutMix:
    """A random box of a partner sample pasted over each sample (over the last two axes of images, a span of the
    last axis otherwise); the box covers a Beta(α, α) share and the label follows the larger share."""

    def __init__(self, alpha: float = 1.0, keep_clean: bool = True) -> None:
        self.alpha, self.keep_clean = alpha, keep_clean

    def __call__(self, batch: Batch, model: nn.Module) -> Batch:
        """The batch with its cut-and-pasted copy."""
        x = batch.x
        n = x.shape[0]
        share = float(torch.distributions.Beta(self.alpha, self.alpha).sample())
        axes = [x.dim() - 2, x.dim() - 1] if x.dim() >= 4 else [x.dim() - 1]
        side = share ** (1 / len(axes))
        mask = torch.zeros(x.shape[1:], dtype=torch.bool, device=x.device)
        box = []
        for axis in axes:
            size = x.shape[axis]
            length = round(size * side)
            start = int(torch.randint(0, size - length + 1, ()))
            box.append((axis - 1, start, length))
        index = [slice(None)] * (x.dim() - 1)
        for axis, start, length in box:
            index[axis] = slice(start, start + length)
        mask[tuple(index)] = True
        pasted = mask.float().mean().item()
        partner = torch.randperm(n).to(x.device)
        mixed = torch.where(mask, x[partner], x)
        y = batch.y[partner] if pasted > 0.5 else batch.y
        return _join(batch, Batch(batch.index, mixed, y, batch.view), self.keep_clean)


class Adversarial:
    """FGSM (one step of size eps) or PGD (`steps` signed-gradient steps of 2.5·eps/steps from a random start),
    raising the student's cross-entropy within an L-inf ball of radius eps; the student is in eval mode meanwhile."""

    def __init__(self, eps: float = 0.1, steps: int = 1, random_start: bool = False, keep_clean: bool = True) -> None:
        self.eps, self.steps, self.random_start, self.keep_clean = eps, steps, random_start, keep_clean

    def attack(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial inputs near x for `model` (targets < 0 use the model's own prediction)."""
        was_training = model.training
        model.eval()
        step = self.eps if self.steps == 1 and not self.random_start else 2.5 * self.eps / self.steps
        origin = x.detach()
        adv = origin.clone()
        if self.random_start:
            adv = adv + (torch.rand(adv.shape) * 2 - 1).to(adv) * self.eps
        with torch.enable_grad():
            for _ in range(self.steps):
                adv.requires_grad_(True)
                logits = as_outputs(model(adv)).logits.float()
                target = torch.where(y >= 0, y, logits.detach().argmax(-1))
                (grad,) = torch.autograd.grad(F.cross_entropy(logits, target), adv)
                adv = origin + (adv.detach() + step * grad.sign() - origin).clamp(-self.eps, self.eps)
        model.train(was_training)
        return adv.detach()

    def __call__(self, batch: Batch, model: nn.Module) -> Batch:
        """The batch with its adversarial copy."""
        adv = self.attack(model, batch.x, batch.y)
        return _join(batch, Batch(batch.index, adv, batch.y, batch.view), self.keep_clean)


def augmentation(cfg: DistillAugmentConfig | None) -> Mixup | CutMix | Adversarial | None:
    """The batch transform a recipe's `distill.augment` asks for (None without one)."""
    if cfg is None:
        return None
    if cfg.kind == "mixup":
        return Mixup(cfg.alpha, cfg.keep_clean)
    if cfg.kind == "cutmix":
        return CutMix(cfg.alpha, cfg.keep_clean)
    if cfg.kind == "fgsm":
        return Adversarial(cfg.eps, 1, random_start=False, keep_clean=cfg.keep_clean)
    return Adversarial(cfg.eps, cfg.steps, random_start=True, keep_clean=cfg.keep_clean)
