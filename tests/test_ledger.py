"""Per-step statistics folded on the device: sums without skipped steps, accuracy over labeled targets only."""

import torch

from distil.ledger import NONE, StepLedger


def step(ledger, loss, correct, bad, target):
    ledger.add(torch.tensor(loss), {"ce": torch.tensor(loss)}, torch.tensor(correct), torch.tensor(bad),
               torch.tensor(target))


def test_sums_skip_bad_steps_and_accuracy_counts_only_labeled_targets():
    ledger = StepLedger(first_step=10, device=torch.device("cpu"))
    step(ledger, 1.0, 2, False, [0, 1, -1, -1])  # two pool samples (-1) have no label
    step(ledger, float("nan"), 1, True, [0, 1])  # a skipped non-finite step counts nowhere
    ledger.flush()  # a check in the middle of the epoch
    step(ledger, 3.0, 1, False, [2, -1])
    seen, labeled, correct, loss, ce = ledger.totals().tolist()
    assert (seen, labeled, correct) == (6, 3, 3)
    assert loss == ce == 1.0 * 4 + 3.0 * 2  # sums of per-sample losses: the engine divides by seen
    assert (ledger.first_bad.item(), ledger.last_bad.item()) == (11, 11)


def test_no_bad_step_leaves_the_markers_unset():
    ledger = StepLedger(first_step=0, device=torch.device("cpu"))
    for _ in range(3):
        step(ledger, 0.5, 1, False, [1, 0])
    ledger.flush()
    assert ledger.first_bad.item() == ledger.last_bad.item() == NONE
    assert ledger.totals()[0].item() == 6
