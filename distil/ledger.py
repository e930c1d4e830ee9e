"""Per-step training statistics kept on the device without per-step bookkeeping kernels.

A step only appends its tensors (loss, loss terms, predicted classes, non-finite flag, targets) to Python lists;
every `train.log_every` steps and at the end of the epoch `flush` concatenates them and folds them into running
sums with a handful of vectorised ops (accuracy included). Nothing here syncs with the host: the engine reads the
sums once per check. `nonfinite` is the step's NaN/inf check: one fused kernel over the gradients and the loss.
"""

from __future__ import annotations

import torch
from torch import Tensor

NONE = -1  # the step index that means "no non-finite step"


def nonfinite(tensors: list[Tensor]) -> Tensor:
    """1.0 when any of `tensors` (gradients, a loss) holds a NaN or inf, else 0.0, as a float tensor on their device.

    One fused kernel (the check AMP's GradScaler runs, at scale 1: the values are unchanged) and no host sync; the
    result is what a fused optimizer's `found_inf` takes to skip a step on the device.
    """
    found = torch.zeros((), device=tensors[0].device)
    one = _ONES.get(found.device)
    if one is None:
        one = _ONES[found.device] = torch.ones((), device=found.device)
    torch._amp_foreach_non_finite_check_and_unscale_(tensors, found, one)
    return found


_ONES: dict[torch.device, Tensor] = {}  # the check's scale (1.0), one per device: never written


class StepLedger:
    """Sums of one epoch's steps (skipped non-finite steps excluded), the first / last non-finite step and the
    stage's running count of non-finite optimizer steps (`bad_steps`, starting from those of earlier epochs)."""

    def __init__(self, first_step: int, device: torch.device, bad_steps: Tensor | int = 0) -> None:
        self.device = device
        self.next_step = first_step  # global index of the first step not yet flushed
        self.seen = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device)
        self.labeled = torch.zeros((), device=device)  # targets that count for accuracy (>= 0: not a pool sample)
        self.loss = torch.zeros((), device=device)
        self.terms: dict[str, Tensor] = {}
        self.first_bad = torch.full((), NONE, device=device, dtype=torch.long)
        self.last_bad = torch.full((), NONE, device=device, dtype=torch.long)
        self.bad_steps = torch.as_tensor(bad_steps, dtype=torch.long).to(device).clone()
        self._pending: list[tuple[Tensor, dict[str, Tensor], Tensor, Tensor, Tensor, bool]] = []

    def add(self, loss: Tensor, terms: dict[str, Tensor], predicted: Tensor, bad: Tensor, target: Tensor,
            stepped: bool = True) -> None:
        """Record one step: its (detached) loss and terms, the predicted classes (shaped like the targets), its
        non-finite flag (bool, or 1.0 / 0.0 as `nonfinite` gives it), its targets, and whether the optimizer stepped
        (with gradient accumulation only every `train.accumulate` steps do; only those count in `bad_steps`)."""
        self._pending.append((loss, terms, predicted, bad, target, stepped))

    def flush(self) -> None:
        """Fold the pending steps into the sums and the first / last non-finite step (all on the device)."""
        if not self._pending:
            return
        losses, terms, predicted, bad, targets, stepped = zip(*self._pending, strict=True)
        count = len(self._pending)
        bad = torch.stack(bad) > 0
        sizes = [t.shape[0] for t in targets]
        kept = torch.where(bad, 0.0, torch.tensor(sizes, device=self.device, dtype=torch.float32))
        self.seen += kept.sum()
        flat = torch.cat([t.reshape(-1) for t in targets])  # unlabeled pool samples (-1) and ignored tokens (-100)
        per_step = torch.tensor([t.numel() for t in targets], device=self.device)
        skipped = bad.repeat_interleave(per_step, output_size=flat.numel())  # output_size: no sync on CUDA
        counted = (flat >= 0) & ~skipped
        self.labeled += counted.sum()
        self.correct += (counted & (torch.cat([p.reshape(-1) for p in predicted]) == flat)).sum()
        self.loss += torch.where(bad, 0.0, torch.stack(losses).float() * kept).sum()
        for name in terms[0]:
            values = torch.stack([t[name] for t in terms]).float()
            self.terms[name] = self.terms.get(name, 0.0) + torch.where(bad, 0.0, values * kept).sum()
        steps = torch.arange(self.next_step, self.next_step + count, device=self.device)
        first = torch.where(bad, steps, steps[-1] + 1).min()
        self.first_bad = torch.where((self.first_bad == NONE) & bad.any(), first, self.first_bad)
        self.last_bad = torch.maximum(self.last_bad, torch.where(bad, steps, NONE).max())
        self.bad_steps += (bad & torch.tensor(stepped, device=self.device)).sum()
        self.next_step += count
        self._pending.clear()

    def totals(self) -> Tensor:
        """[seen, labeled, correct, loss sum, term sums...] as one tensor, for one all-reduce at the epoch's end."""
        self.flush()
        return torch.stack([self.seen, self.labeled, self.correct, self.loss, *self.terms.values()])
