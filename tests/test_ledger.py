"""Per-step statistics folded on the device: sums without skipped steps, accuracy over labeled targets only."""

import torch

from distil.ledger import NONE, StepLedger, nonfinite


def step(ledger, loss, predicted, bad, target):
    ledger.add(torch.tensor(loss), {"ce": torch.tensor(loss)}, torch.tensor(predicted), torch.tensor(bad),
               torch.tensor(target))


def test_sums_skip_bad_steps_and_accuracy_counts_only_labeled_targets():
    ledger = StepLedger(first_step=10, device=torch.device("cpu"))
    step(ledger, 1.0, [0, 1, 0, 3], False, [0, 1, -1, -1])  # two pool samples (-1) have no label
    step(ledger, float("nan"), [0, 1], 1.0, [0, 1])  # a skipped non-finite step (nonfinite's 1.0) counts nowhere
    ledger.flush()  # a check in the middle of the epoch
    step(ledger, 3.0, [2, 2], 0.0, [2, -1])
    seen, labeled, correct, loss, ce = ledger.totals().tolist()
    assert (seen, labeled, correct) == (6, 3, 3)
    assert ledger.bad_steps.item() == 1
    assert loss == ce == 1.0 * 4 + 3.0 * 2  # sums of per-sample losses: the engine divides by seen
    assert (ledger.first_bad.item(), ledger.last_bad.item()) == (11, 11)
    ledger.add(torch.tensor(1.0), {"ce": torch.tensor(1.0)}, torch.tensor([0]), torch.tensor(1.0), torch.tensor([0]),
               stepped=False)  # a non-finite micro-step of gradient accumulation: skipped, not an optimizer step
    ledger.flush()
    assert ledger.bad_steps.item() == 1 and ledger.last_bad.item() == 13


def test_no_bad_step_leaves_the_markers_unset():
    ledger = StepLedger(first_step=0, device=torch.device("cpu"))
    for _ in range(3):
        step(ledger, 0.5, [1, 1], False, [1, 0])
    ledger.flush()
    assert ledger.first_bad.item() == ledger.last_bad.item() == NONE
    assert ledger.totals()[0].item() == 6


def test_nonfinite_flags_nan_or_inf_in_any_tensor_and_leaves_values_unchanged():
    grads = [torch.tensor([1.0, -2.0]), torch.tensor(0.5, dtype=torch.float64)]
    assert nonfinite(grads).item() == 0.0
    assert grads[0].tolist() == [1.0, -2.0] and grads[1].item() == 0.5
    assert nonfinite([*grads, torch.tensor(float("inf"))]).item() == 1.0
    assert nonfinite([torch.tensor([0.0, float("nan")]), torch.tensor(1.0)]).item() == 1.0
