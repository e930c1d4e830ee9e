"""A whole run through the CLI and the Python API: files written, resume, and the user errors."""

import json
import subprocess
import sys

import pytest
import torch
from cli_runner import run_cli
from torch import nn
from torch.utils.data import TensorDataset

import distil
from distil.runlog import MetricsLog


def test_end_to_end_run_writes_every_file(tiny_recipe, tmp_path, capsys):
    runs = tmp_path / "runs"
    code, out, err = run_cli(["run", tiny_recipe, "--runs-dir", runs], capsys)
    assert code == 0, err
    run_dir = runs / "tiny"
    for name in ["recipe.yaml", "metrics.jsonl", "report.md", "results.json", "models/teacher.pt",
                 "models/student.pt", "models/alone.pt", "checkpoints/teach.ckpt", "checkpoints/distill.ckpt",
                 "checkpoints/alone.ckpt"]:
        assert (run_dir / name).is_file(), name
    for label in ["teacher", "student (distilled)", "student (alone)", "top-1", "agree(T)", "latency b=1"]:
        assert label in out
    records = MetricsLog(run_dir / "metrics.jsonl").records()
    epochs = [(r["stage"], r["epoch"]) for r in records if "epoch" in r]
    assert epochs == [("teach", 1), ("teach", 2)] + [(s, e) for s in ("distill", "alone") for e in (1, 2, 3)]
    assert {r["model"] for r in records if r["stage"] == "evaluate"} == {"teacher", "student", "alone"}
    report = (run_dir / "report.md").read_text()
    assert "vs the same student trained alone" in report and "compression" in report
    results = json.loads((run_dir / "results.json").read_text())
    assert results["models"]["teacher"]["agreement"] == 1.0
    assert results["models"]["teacher"]["params"] > results["models"]["student"]["params"]

    code, out, _ = run_cli(["report", run_dir], capsys)
    assert code == 0 and "student (alone)" in out
    code, out, _ = run_cli(["eval", run_dir / "models/student.pt", "--data", "digits"], capsys)
    assert code == 0 and "student.pt" in out

    code, _, err = run_cli(["run", tiny_recipe, "--runs-dir", runs], capsys)
    assert code == 2 and "already exists" in err


def test_interrupted_run_resumes_to_the_same_metrics(tiny_recipe, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["run", tiny_recipe, "--runs-dir", tmp_path / "a", "-q"], capsys)
    assert code == 0, err

    real_write = MetricsLog.write

    def crash_after_distill_epoch_2(self, record):
        real_write(self, record)
        if record.get("stage") == "distill" and record.get("epoch") == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(MetricsLog, "write", crash_after_distill_epoch_2)
    with pytest.raises(KeyboardInterrupt):
        distil.run(str(tiny_recipe), runs_dir=str(tmp_path / "b"))
    monkeypatch.setattr(MetricsLog, "write", real_write)
    assert not (tmp_path / "b/tiny/models/student.pt").exists()
    code, _, err = run_cli(["run", tiny_recipe, "--runs-dir", tmp_path / "b", "--resume", "-q"], capsys)
    assert code == 0, err

    a = json.loads((tmp_path / "a/tiny/results.json").read_text())["models"]
    b = json.loads((tmp_path / "b/tiny/results.json").read_text())["models"]
    for role in ("teacher", "student", "alone"):
        for key in ("top1", "f1", "nll", "ece", "agreement"):
            assert a[role][key] == b[role][key], (role, key)
    epochs = [(r["stage"], r["epoch"]) for r in MetricsLog(tmp_path / "b/tiny/metrics.jsonl").records() if "epoch" in r]
    assert epochs.count(("distill", 2)) == 1 and ("distill", 3) in epochs


def test_set_overrides_reach_the_resolved_recipe(tiny_recipe, tmp_path, capsys):
    code, _, err = run_cli(["run", tiny_recipe, "--runs-dir", tmp_path, "-q", "--set", "distill.losses.1.temperature=8",
                            "--set", "train.epochs=1", "--set", "distill.baseline=false"], capsys)
    assert code == 0, err
    resolved = (tmp_path / "tiny/recipe.yaml").read_text()
    assert "temperature: 8" in resolved and "epochs: 1" in resolved
    assert not (tmp_path / "tiny/models/alone.pt").exists()


def error_cases(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("train: [1, 2\n")
    return {
        "missing file": (["run", tmp_path / "nope.yaml"], "nope.yaml does not exist"),
        "bad yaml": (["run", bad_yaml], "not valid YAML"),
        "unknown model": (["--set", "student.name=resnet9"], "unknown model 'resnet9'"),
        "unknown loss": (["--set", "distill.losses.1.name=kdd"], "unknown loss 'kdd'"),
        "bad type": (["--set", "train.epochs=many"], "train.epochs"),
        "shape": (["--set", "student.name=python:helper_models:expects_40_features"],
                  "does not accept inputs shaped"),
    }


@pytest.mark.parametrize("case", ["missing file", "bad yaml", "unknown model", "unknown loss", "bad type", "shape"])
def test_user_errors_exit_2_with_one_line(case, tiny_recipe, tmp_path, capsys):
    args, message = error_cases(tmp_path)[case]
    if args[0] != "run":
        args = ["run", tiny_recipe, "--runs-dir", tmp_path / "runs", "-q", *args]
    code, _, err = run_cli(args, capsys)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_class_count_mismatch_with_a_teacher_checkpoint(tiny_recipe, tmp_path, capsys):
    teacher = tmp_path / "teacher.pt"
    from distil.checkpoint import save_model
    from distil.models import build_model
    from distil.recipe import ModelConfig

    config = ModelConfig(name="mlp", hidden=[4])
    save_model(teacher, build_model(config, (1, 8, 8), 3), config=config.model_dump(),
               input_shape=(1, 8, 8), num_classes=3, class_names=["a", "b", "c"])
    code, _, err = run_cli(["run", tiny_recipe, "--runs-dir", tmp_path / "runs", "-q",
                            "--set", f"teacher.checkpoint={teacher}"], capsys)
    assert code == 2 and "predicts 3 classes" in err and "has 10" in err


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tiny_recipe, tmp_path, capsys):
    code, _, err = run_cli(["run", tiny_recipe, "--runs-dir", tmp_path, "-q",
                            "--set", "teacher.name=python:helper_models:nan_after_20", "--set", "teacher.epochs=5"],
                           capsys)
    assert code == 2
    assert "NaN or infinite at step 20 (epoch 3)" in err
    saved = torch.load(tmp_path / "tiny/checkpoints/teach.ckpt", weights_only=False)
    assert saved["epoch"] == 2


def test_cli_subprocess_exit_code_and_methods_listing(tmp_path):
    done = subprocess.run([sys.executable, "-m", "distil", "run", str(tmp_path / "missing.yaml")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "does not exist" in done.stderr and "Traceback" not in done.stderr
    listing = subprocess.run([sys.executable, "-m", "distil", "methods"], capture_output=True, text=True)
    assert listing.returncode == 0 and "temperature=4.0" in listing.stdout and "Hinton" in listing.stdout


def test_python_api_with_a_user_module_and_a_tensor_dataset():
    torch.manual_seed(0)
    x = torch.randn(400, 6)
    y = (x[:, 0] + x[:, 1] > 0).long() + (x[:, 2] > 0.5).long()
    train, val = TensorDataset(x[:300], y[:300]), TensorDataset(x[300:], y[300:])
    teacher = nn.Sequential(nn.Linear(6, 64), nn.ReLU(), nn.Linear(64, 3))
    optimizer = torch.optim.Adam(teacher.parameters(), lr=0.01)
    for _ in range(200):
        optimizer.zero_grad()
        nn.functional.cross_entropy(teacher(x[:300]), y[:300]).backward()
        optimizer.step()
    student = nn.Sequential(nn.Linear(6, 4), nn.ReLU(), nn.Linear(4, 3))
    result = distil.distill(teacher, student, train=train, val=val,
                            losses=[distil.CE(weight=0.1), distil.KD(weight=0.9, temperature=4)], epochs=20, lr=0.01)
    assert result.student is student
    assert result.metrics["agreement"] > 0.7
    assert result.metrics["top1"] > 0.6
    assert len(result.history) == 20 and "loss_kd" in result.history[0]
    assert all(not p.requires_grad for p in teacher.parameters())
