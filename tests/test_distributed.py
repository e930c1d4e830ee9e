"""Data-parallel runs under torchrun (2 CPU processes, gloo): same results as 1 process, resume, rank-0 writes."""

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from distil import checkpoint
from distil.batch import iterate, shard_index
from distil.data import IndexedTensorDataset
from distil.pipeline import run_recipe
from distil.recipe import load_recipe
from distil.runlog import MetricsLog

# 20 noisy views x 210 training samples = 4,200 cache rows: two cache blocks, one built by each rank
OVERRIDES = ["cache.dtype=fp32", "data.augment.noise=0.1", "data.augment.views=20"]


def torchrun(recipe: Path, runs: Path, *extra: str, crash_at: str | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in {checkpoint.CRASH_ENV, "RANK", "WORLD_SIZE"}}
    if crash_at:
        env[checkpoint.CRASH_ENV] = crash_at
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               "-m", "distil", "run", str(recipe), "--runs-dir", str(runs), "-q",
               *(f"--set={o}" for o in OVERRIDES), *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=240)


def test_shards_split_every_global_batch():
    data = IndexedTensorDataset(torch.arange(10.0).unsqueeze(1), torch.zeros(10, dtype=torch.long))
    whole = [b.index.tolist() for b in iterate(data, 4, shuffle=True, generator=torch.Generator().manual_seed(0))]
    parts = [[b.index.tolist() for b in iterate(data, 4, shuffle=True, generator=torch.Generator().manual_seed(0),
                                                shard=(rank, 2))] for rank in range(2)]
    assert [a + b for a, b in zip(*parts)] == whole  # same steps, disjoint halves of each global batch
    assert shard_index(torch.tensor([7]), 1, 2).tolist() == [7]  # a last batch smaller than the world: no empty part


@pytest.mark.skipif(not torch.distributed.is_available(), reason="this torch build has no torch.distributed")
def test_two_processes_match_one_and_resume_under_torchrun(tiny_recipe, tmp_path):
    one = run_recipe(load_recipe(tiny_recipe, OVERRIDES), tmp_path / "one", quiet=True)
    runs = tmp_path / "two"
    # rank 0's 5th save is the distill checkpoint of epoch 2: the whole job dies right after it
    crashed = torchrun(tiny_recipe, runs, crash_at="end:5")
    assert crashed.returncode != 0
    assert checkpoint.load(runs / "tiny/checkpoints/distill.ckpt")["epoch"] == 2
    assert not (runs / "tiny/models/student.pt").exists()
    assert (runs / "tiny/cache/manifest.json").is_file()

    resumed = torchrun(tiny_recipe, runs, "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    two = MetricsLog(runs / "tiny/metrics.jsonl").records()
    epochs = [(r["stage"], r["epoch"]) for r in two if "epoch" in r]
    assert len(epochs) == len(set(epochs)) == 8  # rank 0 alone wrote: each epoch once

    reference = MetricsLog(one.run_dir / "metrics.jsonl").records()
    for a, b in zip(reference, two):
        assert (a.get("stage"), a.get("epoch"), a.get("model")) == (b.get("stage"), b.get("epoch"), b.get("model"))
        for key in ("loss", "val_loss", "train_acc", "val_acc", "top1", "f1"):
            if key in a:  # the same global batch: only float summation order differs
                assert math.isclose(a[key], b[key], rel_tol=1e-3, abs_tol=1e-3), (a["stage"], key, a[key], b[key])
    assert (runs / "tiny/report.html").is_file() and (runs / "tiny/results.json").is_file()
