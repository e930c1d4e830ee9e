"""Crash safety: kill -9 at several moments then --resume, checksummed checkpoints, disk full, NaN steps skipped."""

import errno
import json
import logging
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from distil import checkpoint
from distil.data import IndexedTensorDataset
from distil.engine import Fit
from distil.errors import DistilError
from distil.methods import CE, Objective
from distil.pipeline import run_recipe
from distil.recipe import TrainConfig, load_recipe
from distil.runlog import MetricsLog

MACHINE_DEPENDENT = {"seconds", "latency_ms", "throughput"}


def deterministic_part(run_dir: Path) -> tuple[dict, list[dict]]:
    """Everything a run measured except timings: per-model metrics and every metrics.jsonl record."""
    models = json.loads((run_dir / "results.json").read_text())["models"]
    models = {role: {k: v for k, v in m.items() if k not in MACHINE_DEPENDENT} for role, m in models.items()}
    records = [{k: v for k, v in r.items() if k not in MACHINE_DEPENDENT}
               for r in MetricsLog(run_dir / "metrics.jsonl").records()]
    return models, records


def launch(recipe: Path, runs: Path, *extra: str, crash_at: str) -> int:
    """Run `distil run` in a new process that SIGKILLs itself at `crash_at` (see checkpoint.CRASH_ENV)."""
    env = {**os.environ, checkpoint.CRASH_ENV: crash_at}
    done = subprocess.run([sys.executable, "-m", "distil", "run", str(recipe), "--runs-dir", str(runs), "-q", *extra],
                          capture_output=True, text=True, env=env, timeout=180)
    assert "Traceback" not in done.stderr, done.stderr
    return done.returncode


def test_kill_9_at_several_moments_then_resume_ends_exactly_like_an_uninterrupted_run(tiny_recipe, tmp_path):
    reference = run_recipe(load_recipe(tiny_recipe), tmp_path / "reference", quiet=True).run_dir
    runs = tmp_path / "crashed"
    # `save` calls of the tiny recipe: teach epochs 1-2, teacher.pt, distill epochs 4-6, student.pt, alone 8-10
    assert launch(tiny_recipe, runs, crash_at="rename:5") == -signal.SIGKILL  # distill epoch 2: temp written
    ckpt = runs / "tiny/checkpoints/distill.ckpt"
    assert checkpoint.load(ckpt)["epoch"] == 1 and list(ckpt.parent.glob(".distill.ckpt.*.tmp"))
    # resumed: distill epochs 2-3, student.pt, then alone epoch 1 saved and killed before its metrics line
    assert launch(tiny_recipe, runs, "--resume", crash_at="end:4") == -signal.SIGKILL
    assert checkpoint.load(runs / "tiny/checkpoints/alone.ckpt")["epoch"] == 1
    assert ("alone", 1) not in [(r["stage"], r.get("epoch")) for r in MetricsLog(runs / "tiny/metrics.jsonl").records()]
    assert not list(ckpt.parent.glob(".*.tmp"))  # stale temp files are cleaned by the next save
    run_recipe(load_recipe(tiny_recipe), runs, resume=True, quiet=True)  # the last resume needs no new process
    assert deterministic_part(runs / "tiny") == deterministic_part(reference)


def toy_fit(tmp_path: Path, epochs: int, model: nn.Module | None = None, **train) -> Fit:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 4, generator=g)
    data = IndexedTensorDataset(x, (x[:, 0] > 0).long())
    torch.manual_seed(0)
    cfg = TrainConfig(**{"epochs": epochs, "batch_size": 16, "lr": 0.05, "scheduler": "none", **train})
    return Fit(stage="t", model=model or nn.Linear(4, 2), objective=Objective([CE()]), train=data, val=data, cfg=cfg,
               device=torch.device("cpu"), seed=0, checkpoint_path=tmp_path / "t.ckpt", quiet=True)


def test_a_corrupt_checkpoint_is_detected_and_the_previous_good_one_used(tmp_path, caplog):
    straight = toy_fit(tmp_path / "a", 3).run().history
    toy_fit(tmp_path / "b", 2).run()
    ckpt = tmp_path / "b/t.ckpt"
    assert checkpoint.load(checkpoint.previous_path(ckpt))["epoch"] == 1
    data = ckpt.read_bytes()
    ckpt.write_bytes(data[: len(data) // 2])  # truncated
    with caplog.at_level(logging.WARNING, logger="distil"):
        resumed = toy_fit(tmp_path / "b", 3).run(resume=True).history
    assert "truncated or corrupt" in caplog.text and "t.prev.ckpt" in caplog.text
    strip = [[{k: v for k, v in r.items() if k != "seconds"} for r in h] for h in (straight, resumed)]
    assert strip[0] == strip[1]

    flipped = bytearray(ckpt.read_bytes())
    flipped[100] ^= 0xFF  # one flipped byte in the payload
    ckpt.write_bytes(bytes(flipped))
    with pytest.raises(DistilError, match="SHA-256 mismatch"):
        checkpoint.load(ckpt)
    checkpoint.previous_path(ckpt).write_bytes(b"garbage")
    with pytest.raises(DistilError, match="no good checkpoint is left"):
        toy_fit(tmp_path / "b", 4).run(resume=True)


def test_disk_full_mid_write_never_replaces_a_good_file(tmp_path, monkeypatch):
    path = tmp_path / "c.ckpt"
    checkpoint.save_checkpoint(path, {"epoch": 1})
    checkpoint.save_checkpoint(path, {"epoch": 2})
    real_fdopen = os.fdopen

    class FullDisk:
        def __init__(self, f):
            self.f = f

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.f.close()

        def write(self, data):
            self.f.write(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoint.os, "fdopen", lambda fd, mode: FullDisk(real_fdopen(fd, mode)))
    with pytest.raises(DistilError, match="no space left") as caught:
        checkpoint.save_checkpoint(path, {"epoch": 3})
    assert str(path) in str(caught.value)
    with pytest.raises(DistilError, match="no space left"):
        checkpoint.atomic_write_text(tmp_path / "c.txt", "x" * 100)
    monkeypatch.undo()
    assert checkpoint.load(path)["epoch"] == 2 and checkpoint.load(checkpoint.previous_path(path))["epoch"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.ckpt", "c.prev.ckpt"]


class NanFrom(nn.Linear):
    """A linear layer whose output is NaN from training forward `start` on (counting from 0)."""

    def __init__(self, start: int):
        super().__init__(4, 2)
        self.start, self.calls = start, 0

    def forward(self, x):
        out = super().forward(x)
        if self.training:
            self.calls += 1
            if self.calls > self.start:
                out = out * float("nan")
        return out


def test_non_finite_steps_are_skipped_on_device_up_to_the_limit(tmp_path):
    # 6 steps per epoch; NaN from step 6 on: every step of epoch 2 is skipped, so the weights equal one clean epoch
    one_epoch = toy_fit(tmp_path / "a", 1, max_bad_steps=6).run().model
    torch.manual_seed(0)
    skipped = toy_fit(tmp_path / "b", 2, model=NanFrom(6), max_bad_steps=6).run()
    for a, b in zip(one_epoch.parameters(), skipped.model.parameters()):
        assert torch.equal(a, b)
    assert math.isfinite(skipped.history[0]["loss"]) and math.isnan(skipped.history[1]["loss"])

    torch.manual_seed(0)
    with pytest.raises(DistilError, match=r"7 steps had a NaN .*max_bad_steps=6; the last was step 12 \(epoch 3\)"):
        toy_fit(tmp_path / "c", 3, model=NanFrom(6), max_bad_steps=6, log_every=1).run()
    assert checkpoint.load(tmp_path / "c/t.ckpt")["epoch"] == 2  # the last good checkpoint is kept


class _NanGrad(torch.autograd.Function):
    """Identity forward; NaN gradient backward: the loss stays finite while the gradients do not."""

    @staticmethod
    def forward(ctx, x):
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        return grad * float("nan")


class NanGradAt(NanFrom):
    """A linear layer whose gradients are NaN at training forward `start` alone (`grad`), or whose output is NaN
    there (`grad=False`)."""

    def __init__(self, start: int, grad: bool = True):
        super().__init__(start)
        self.grad = grad

    def forward(self, x):
        out = nn.Linear.forward(self, x)
        if self.training:
            self.calls += 1
            if self.calls == self.start + 1:
                out = _NanGrad.apply(out) if self.grad else out * float("nan")
        return out


@pytest.mark.parametrize("grad_clip", [None, 1.0])
def test_a_nan_gradient_under_a_finite_loss_stops_the_stage_at_its_step(tmp_path, grad_clip):
    torch.manual_seed(0)
    with pytest.raises(DistilError, match=r"became NaN or infinite at step 8 \(epoch 2\)"):
        toy_fit(tmp_path / "a", 3, model=NanGradAt(8), grad_clip=grad_clip, log_every=1).run()
    assert checkpoint.load(tmp_path / "a/t.ckpt")["epoch"] == 1


def test_a_nan_micro_step_counts_once_as_a_skipped_optimizer_step(tmp_path):
    # accumulate 2: micro-step 6's loss is NaN (flagged, not an optimizer step); the optimizer step at 7 then has
    # NaN gradients and is the one skipped step, so max_bad_steps=1 holds and the weights stay finite
    torch.manual_seed(0)
    fit = toy_fit(tmp_path / "a", 2, model=NanGradAt(6, grad=False), accumulate=2, max_bad_steps=1)
    done = fit.run()
    assert int(fit._bad_steps) == 1 and checkpoint.load(tmp_path / "a/t.ckpt")["bad_steps"] == 1
    assert all(torch.isfinite(p).all() for p in done.model.parameters())


class CrashAt(NanFrom):
    """A linear layer that raises at training forward `start` (counting from 0): a run killed mid-stage."""

    def forward(self, x):
        if self.training:
            self.calls += 1
            if self.calls > self.start:
                raise KeyboardInterrupt
        return nn.Linear.forward(self, x)


@pytest.mark.parametrize("scheduler", ["none", "cosine"])
def test_resume_of_a_constant_or_scheduled_lr_ends_like_the_uninterrupted_run(tmp_path, scheduler):
    straight = toy_fit(tmp_path / "a", 3, scheduler=scheduler).run()
    torch.manual_seed(0)
    with pytest.raises(KeyboardInterrupt):  # 6 steps per epoch: stopped in the middle of epoch 3
        toy_fit(tmp_path / "b", 3, model=CrashAt(15), scheduler=scheduler).run()
    resumed = toy_fit(tmp_path / "b", 3, scheduler=scheduler).run(resume=True)
    for a, b in zip(straight.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    assert [r["lr"] for r in straight.history] == [r["lr"] for r in resumed.history]


def test_files_written_atomically_get_the_mode_open_would_give(tmp_path):
    path, plain = tmp_path / "report.html", tmp_path / "plain.html"
    checkpoint.atomic_write_text(path, "<html></html>")
    plain.write_text("<html></html>")  # not mkstemp's 0600
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777 == checkpoint.FILE_MODE


def test_a_concurrent_writers_temp_file_is_not_cleaned_away(tmp_path) -> None:
    """Two writers of one file: the cleanup after the first write leaves the second's live temp file alone."""
    target = tmp_path / "report.html"
    seen = {}

    def slow_writer(f) -> None:
        f.write(b"second")
        checkpoint.write_atomically(target, lambda g: g.write(b"first"))  # finishes (and cleans) meanwhile
        seen["temps"] = sorted(p.name for p in tmp_path.glob(".report.html.*.tmp"))

    checkpoint.write_atomically(target, slow_writer)
    assert len(seen["temps"]) == 1  # the outer writer's temp survived the inner writer's cleanup
    assert target.read_bytes() == b"second" and not list(tmp_path.glob(".*.tmp"))
