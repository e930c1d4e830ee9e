"""`distil sweep`: search-space parsing, parallel trials in processes, a resumable SQLite study, sweep.md / .png."""

import re

import pytest
import yaml
from cli_runner import run_cli

from distil.errors import DistilError
from distil.sweep import SearchParam, parse_param, run_sweep

FAST = ["distill.baseline=false", "train.epochs=2", "eval.latency_repeats=3"]


def test_param_syntax():
    assert parse_param("distill.losses.1.temperature=1,2,4,8") == SearchParam(
        "distill.losses.1.temperature", choices=(1, 2, 4, 8))
    assert parse_param("train.optimizer=sgd, adamw") == SearchParam("train.optimizer", choices=("sgd", "adamw"))
    assert parse_param("distill.losses.1.weight=0.5:0.95") == SearchParam("distill.losses.1.weight", low=0.5,
                                                                         high=0.95)
    assert parse_param("train.epochs=2:6").integer
    assert parse_param("train.lr=0.0001:0.1:log").log
    for bad in ["train.lr", "train.lr=", "train.lr=0.1:0.01", "train.lr=0:1:log", "train.lr=a:b"]:
        with pytest.raises(DistilError, match="--param"):
            parse_param(bad)


def test_bad_sweeps_fail_before_any_trial(tiny_recipe, tmp_path):
    with pytest.raises(DistilError, match="train.lrr"):
        run_sweep(tiny_recipe, ["train.lrr=1,2"], trials=1, runs_dir=tmp_path)
    with pytest.raises(DistilError, match="val_fraction"):
        run_sweep(tiny_recipe, ["train.lr=0.1,0.2"], trials=1, runs_dir=tmp_path, overrides=["data.val_fraction=0"])
    assert not (tmp_path / "tiny-sweep").exists()


def test_parallel_trials_then_resume_through_the_cli(tiny_recipe, tmp_path, capsys):
    params = ["distill.losses.1.temperature=1,4", "distill.losses.1.weight=0.5:0.95"]
    best = run_sweep(tiny_recipe, params, trials=2, jobs=2, overrides=FAST, runs_dir=tmp_path, quiet=True)
    folder = tmp_path / "tiny-sweep"
    assert best["trials"] == 2 and (folder / "optuna.db").is_file()

    args = ["sweep", tiny_recipe, "--runs-dir", tmp_path, "--trials", "3", *(f"--param={p}" for p in params),
            *(f"--set={s}" for s in FAST)]
    code, out, err = run_cli(args, capsys)
    assert code == 0, err
    assert out.count("trial ") == 1 and "best of 3 trials" in out  # only the missing trial ran
    table = (folder / "sweep.md").read_text()
    rows = [line for line in table.splitlines() if re.match(r"\| \d+ \| \d+ \|", line)]
    assert len(rows) == 3 and "![" in table
    assert (folder / "sweep.png").read_bytes().startswith(b"\x89PNG")

    values = [float(row.split("|")[5]) for row in rows]
    assert values == sorted(values, reverse=True) and all(0 <= v <= 1 for v in values)
    for row in rows:  # every trial is a normal run whose resolved recipe holds the sampled settings
        cells = [c.strip() for c in row.split("|")]
        recipe = yaml.safe_load((folder / "trials" / cells[-2].strip("`") / "recipe.yaml").read_text())
        assert recipe["distill"]["losses"][1]["temperature"] == float(cells[3])
        assert recipe["distill"]["losses"][1]["weight"] == pytest.approx(float(cells[4]), rel=1e-3)
        assert recipe["train"]["epochs"] == 2
