"""The training loop's settings: schedules, accumulation, early stopping, precision; and the metrics."""

import math

import pytest
import torch
from torch import nn

from distil.data import IndexedTensorDataset
from distil.engine import Fit, lr_factor, resolve_device
from distil.errors import DistilError
from distil.methods import CE, Objective
from distil.metrics import classification_metrics, expected_calibration_error
from distil.recipe import TrainConfig


def toy_data(n=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return IndexedTensorDataset(x, (x[:, 0] > 0).long())


def fit(cfg: TrainConfig, model=None, val=None, seed=0):
    torch.manual_seed(seed)
    model = model or nn.Linear(4, 2)
    return Fit(stage="t", model=model, objective=Objective([CE()]), train=toy_data(), val=val, cfg=cfg,
               device=torch.device("cpu"), seed=seed, quiet=True).run()


def test_lr_schedules():
    warm = lr_factor(TrainConfig(epochs=10, warmup_epochs=2, scheduler="cosine"), steps_per_epoch=5, epochs=10)
    assert warm(0) == pytest.approx(0.1) and warm(9) == pytest.approx(1.0)
    assert warm(10) == pytest.approx(1.0) and warm(49) == pytest.approx(0.5 * (1 + math.cos(math.pi * 39 / 40)))
    step = lr_factor(TrainConfig(scheduler="step", milestones=[2, 4], gamma=0.1), steps_per_epoch=5, epochs=6)
    assert [step(s) for s in (0, 10, 20)] == pytest.approx([1.0, 0.1, 0.01])
    assert lr_factor(TrainConfig(scheduler="none"), 5, 6)(29) == 1.0


def test_accumulation_equals_a_larger_batch():
    # Two accumulated half-batches of SGD give the same update as one full batch (mean losses, no momentum).
    cfg = dict(epochs=1, optimizer="sgd", momentum=0.0, lr=0.1, scheduler="none")
    full = fit(TrainConfig(batch_size=128, **cfg)).model
    accumulated = fit(TrainConfig(batch_size=64, accumulate=2, **cfg)).model
    for a, b in zip(full.parameters(), accumulated.parameters()):
        assert torch.allclose(a, b, atol=1e-6)


def test_early_stopping_stops_and_restores_the_best_epoch():
    result = fit(TrainConfig(epochs=50, lr=0.5, early_stopping={"metric": "val_loss", "patience": 2}),
                 val=toy_data(64, seed=1))
    assert result.stopped_early and len(result.history) < 50
    best = min(r["val_loss"] for r in result.history)
    assert result.history[-3]["val_loss"] == pytest.approx(best)
    with pytest.raises(DistilError, match="validation split"):
        fit(TrainConfig(epochs=2, early_stopping={"patience": 2}))


def test_bf16_autocast_trains():
    result = fit(TrainConfig(epochs=3, precision="bf16", lr=0.05))
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_same_seed_same_result_and_grad_clip():
    a = fit(TrainConfig(epochs=2, grad_clip=0.1)).history
    b = fit(TrainConfig(epochs=2, grad_clip=0.1)).history
    assert [r["loss"] for r in a] == [r["loss"] for r in b]


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(DistilError, match="device"):
        resolve_device("tpu9")


def test_ece_and_metrics_on_known_answers():
    probs = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.6, 0.4]])
    target = torch.tensor([0, 1, 0, 0])
    # bin (0.8,0.9]: conf 0.9, acc 0.5 -> gap 0.4 * 1/2 ; bin (0.5,0.6]: conf 0.6, acc 1.0 -> gap 0.4 * 1/2
    assert expected_calibration_error(probs, target, bins=10) == pytest.approx(0.4)
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])
    m = classification_metrics(logits, torch.tensor([0, 1, 1, 0]), 2, teacher_logits=logits.flip(-1))
    assert m["top1"] == 0.75 and m["agreement"] == 0.0
    assert m["recall"] == pytest.approx((1.0 + 0.5) / 2) and m["precision"] == pytest.approx((2 / 3 + 1) / 2)
    assert "top5" not in m



class RecordingBar:
    """Stands in for tqdm: keeps its arguments and every call the engine makes."""

    made: list = []

    def __init__(self, **kwargs):
        self.kwargs, self.updates, self.descriptions, self.closed = kwargs, [], [], False
        RecordingBar.made.append(self)

    def update(self, n):
        self.updates.append(n)

    def set_description(self, text):
        self.descriptions.append(text)

    def set_postfix(self, values):
        pass

    def close(self):
        self.closed = True


def fit_with_bar(monkeypatch, cfg: TrainConfig, quiet: bool) -> RecordingBar:
    import distil.engine

    RecordingBar.made = []
    monkeypatch.setattr(distil.engine, "tqdm", RecordingBar)
    Fit(stage="t", model=nn.Linear(4, 2), objective=Objective([CE()]), train=toy_data(), val=None, cfg=cfg,
        device=torch.device("cpu"), quiet=quiet).run()
    (bar,) = RecordingBar.made
    return bar


def test_progress_bar_advances_every_step_in_samples(monkeypatch):
    # 128 samples in batches of 48: three steps an epoch (48, 48, 32), each one an update of the stage's bar.
    monkeypatch.delenv("CI", raising=False)
    bar = fit_with_bar(monkeypatch, TrainConfig(epochs=2, batch_size=48, lr=0.01), quiet=False)
    assert bar.kwargs["total"] == 2 * 128 and bar.kwargs["unit"] == "sample" and bar.kwargs["disable"] is None
    assert bar.updates == [48, 48, 32, 48, 48, 32]
    assert bar.descriptions == ["t 1/2", "t 2/2"] and bar.closed


def test_progress_bar_is_hidden_under_quiet_and_ci(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    assert fit_with_bar(monkeypatch, TrainConfig(epochs=1, lr=0.01), quiet=True).kwargs["disable"] is True
    monkeypatch.setenv("CI", "true")
    assert fit_with_bar(monkeypatch, TrainConfig(epochs=1, lr=0.01), quiet=False).kwargs["disable"] is True
