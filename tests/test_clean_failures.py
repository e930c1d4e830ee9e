"""Recipes and runs that fail cleanly: one line and exit 2, or a warning in the report, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from cli_runner import run_cli

from distil.errors import DistilError
from distil.recipe import load_recipe
from distil.runlog import MetricsLog

pytestmark = pytest.mark.usefixtures("one_thread")


def one_line_exit_2(args: list, capsys) -> str:
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


@pytest.mark.parametrize(("text", "message"), [
    ('name: "a\\0b"\n', "field 'name'.*no control characters"),
    (f"name: {'x' * 300}\n", "name is 300 characters long; use at most 100"),
    ("seed: 1000000000000000000000000\n", "field 'seed': Input should be less than 4294967296"),
    ("data: {name: synthetic, synthetic: {shape: [-3]}}\n", "data.synthetic.shape.0.*greater than or equal to 1"),
    ("train: {epochs: 3}\nseed: 1\ntrain: {epochs: 4}\n", "key 'train' appears twice \\(again at line 3\\)"),
    ("train: {epoch: 3}\n", "unknown field 'train.epoch' \\(did you mean epochs.*valid fields here: epochs, "
                            "batch_size"),
    ("distill: {teachers: [{name: mlp, epoch: 2}]}\n", "'distill.teachers.0.epoch' \\(did you mean epochs"),
])
def test_bad_recipes_fail_in_one_line(tmp_path: Path, capsys, text: str, message: str) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text(text)
    with pytest.raises(DistilError, match=message):
        load_recipe(recipe)
    one_line_exit_2(["run", recipe, "--runs-dir", tmp_path / "runs", "-q"], capsys)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_a_huge_student_fails_before_the_teacher_trains_and_the_retry_is_not_blocked(tmp_path: Path, tiny_recipe,
                                                                                    capsys) -> None:
    runs = tmp_path / "runs"
    err = one_line_exit_2(["run", tiny_recipe, "--set", "student.hidden=[1000000000000]", "--runs-dir", runs, "-q"],
                          capsys)
    assert "student: 'mlp' has 75,000,000,000,010 parameters" in err and "student.hidden" in err
    assert not (runs / "tiny").exists()  # nothing trained, nothing left that blocks the retry
    code, _, err = run_cli(["run", tiny_recipe, "--set", "train.epochs=1", "--set", "teacher.epochs=1",
                            "--runs-dir", runs, "-q"], capsys)
    assert code == 0, err
    run_dir = runs / "tiny"
    evaluated = [r for r in MetricsLog(run_dir / "metrics.jsonl").records() if r["stage"] == "evaluate"]
    code, _, err = run_cli(["run", tiny_recipe, "--set", "train.epochs=1", "--set", "teacher.epochs=1", "--resume",
                            "--runs-dir", runs, "-q"], capsys)
    assert code == 0, err
    again = [r for r in MetricsLog(run_dir / "metrics.jsonl").records() if r["stage"] == "evaluate"]
    assert len(again) == len(evaluated) == 3  # teacher, student, alone: once each after --resume


def write_npz(path: Path, y: np.ndarray) -> Path:
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.normal(size=(len(y), 4)).astype(np.float32), y=y)
    return path


def test_a_one_class_dataset_is_refused(tmp_path: Path, capsys) -> None:
    data = write_npz(tmp_path / "one.npz", np.zeros(40, dtype=np.int64))
    err = one_line_exit_2(["run", "--set", f"data={{name: npz, path: {data}}}", "--runs-dir", tmp_path / "runs",
                           "-q"], capsys)
    assert "training split holds only class" in err and "at least two classes" in err
    assert not (tmp_path / "runs" / "run").exists()


def test_a_one_sample_test_split_warns_in_the_report(tmp_path: Path, capsys) -> None:
    data = write_npz(tmp_path / "five.npz", np.array([0, 1, 0, 1, 0]))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: five\ndata: {{name: npz, path: {data}}}\nteacher: {{name: mlp, hidden: [4]}}\n"
                      "student: {name: mlp, hidden: [2]}\ntrain: {epochs: 1, batch_size: 2}\n"
                      "eval: {latency_repeats: 3, throughput_batch: 2}\n")
    code, _, err = run_cli(["run", recipe, "--runs-dir", tmp_path / "runs", "-q"], capsys)
    assert code == 0, err
    run_dir = tmp_path / "runs" / "five"
    warning = "the test split holds only 1 sample"
    assert warning in (run_dir / "report.md").read_text()
    assert any(warning in w for w in json.loads((run_dir / "results.json").read_text())["warnings"])
