"""Per-step training statistics kept on the device without per-step bookkeeping kernels.

A step only appends its scalars (loss, loss terms, correct count, non-finite flag) to Python lists; every
`train.log_every` steps and at the end of the epoch `flush` stacks them and folds them into running sums with a
handful of vectorised ops. Nothing here syncs with the host: the engine reads the sums once per check.
"""

from __future__ import annotations

import torch
from torch import Tensor

NONE = -1  # the step index that means "no non-finite step"


class StepLedger:
    """Sums of one epoch's steps (skipped non-finite steps excluded) and the first / last non-finite step."""

    def __init__(self, first_step: int, device: torch.device) -> None:
        self.device = device
        self.next_step = first_step  # global index of the first step not yet flushed
        self.seen = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device)
        self.labeled = torch.zeros((), device=device)  # targets that count for accuracy (>= 0: not a pool sample)
        self.loss = torch.zeros((), device=device)
        self.terms: dict[str, Tensor] = {}
        self.first_bad = torch.full((), NONE, device=device, dtype=torch.long)
        self.last_bad = torch.full((), NONE, device=device, dtype=torch.long)
        self._pending: list[tuple[Tensor, dict[str, Tensor], Tensor, Tensor, Tensor]] = []

    def add(self, loss: Tensor, terms: dict[str, Tensor], correct: Tensor, bad: Tensor, target: Tensor) -> None:
        """Record one step: its (detached) loss and terms, correct predictions, non-finite flag and targets."""
        self._pending.append((loss, terms, correct, bad, target))

    def flush(self) -> None:
        """Fold the pending steps into the sums and the first / last non-finite step (all on the device)."""
        if not self._pending:
            return
        losses, terms, correct, bad, targets = zip(*self._pending, strict=True)
        count = len(self._pending)
        bad = torch.stack(bad)
        sizes = [t.shape[0] for t in targets]
        kept = torch.where(bad, 0.0, torch.tensor(sizes, device=self.device, dtype=torch.float32))
        self.seen += kept.sum()
        self.correct += torch.where(bad, 0.0, torch.stack(correct).float()).sum()
        flat = torch.cat([t.reshape(-1) for t in targets])  # unlabeled pool samples (-1) and ignored tokens (-100)
        per_step = torch.tensor([t.numel() for t in targets], device=self.device)
        skipped = bad.repeat_interleave(per_step, output_size=flat.numel())  # output_size: no sync on CUDA
        self.labeled += ((flat >= 0) & ~skipped).sum()
        self.loss += torch.where(bad, 0.0, torch.stack(losses).float() * kept).sum()
        for name in terms[0]:
            values = torch.stack([t[name] for t in terms]).float()
            self.terms[name] = self.terms.get(name, 0.0) + torch.where(bad, 0.0, values * kept).sum()
        steps = torch.arange(self.next_step, self.next_step + count, device=self.device)
        first = torch.where(bad, steps, steps[-1] + 1).min()
        self.first_bad = torch.where((self.first_bad == NONE) & bad.any(), first, self.first_bad)
        self.last_bad = torch.maximum(self.last_bad, torch.where(bad, steps, NONE).max())
        self.next_step += count
        self._pending.clear()

    def totals(self) -> Tensor:
        """[seen, labeled, correct, loss sum, term sums...] as one tensor, for one all-reduce at the epoch's end."""
        self.flush()
        return torch.stack([self.seen, self.labeled, self.correct, self.loss, *self.terms.values()])
