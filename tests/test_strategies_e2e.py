"""Every strategy recipe under distil/recipes/, end to end on 200 digits with tiny MLPs, and each Python entry point."""

import json

import pytest
import torch
from cli_runner import run_cli
from torch import nn
from torch.utils.data import TensorDataset

import distil
from distil.checkpoint import load_model
from distil.recipe import builtin_recipe_path
from distil.runlog import MetricsLog
from distil.strategies.continual import learn_without_forgetting
from distil.strategies.online import mutual_learning
from distil.strategies.self_distill import born_again
from distil.strategies.transfer_set import distill_unlabeled

TINY = ["data.limit=200", "train.epochs=1", "train.batch_size=32", "train.lr=0.01", "eval.latency_repeats=3",
        "eval.throughput_batch=16", "student.hidden=[8]"]
SMALL_TEACHER = ["teacher.name=mlp", "teacher.hidden=[16]", "teacher.epochs=1"]


@pytest.fixture
def no_html(monkeypatch):
    """Skip report.html (its plots take seconds; the runs that keep it check it renders for their strategy)."""
    monkeypatch.setattr("distil.report_html.write_html_report", lambda run_dir, results: None)


def run_builtin(name, tmp_path, *extra):
    result = distil.run(str(builtin_recipe_path(f"{name}.yaml")), overrides=[*TINY, *extra],
                        runs_dir=str(tmp_path / "runs"))
    return result.results, result.run_dir


def test_multi_teacher_recipe(tmp_path, capsys, no_html):
    teachers = "[{name: mlp, hidden: [16], epochs: 1}, {name: mlp, hidden: [8], epochs: 1, classes: [4, 0, 1, 2, 3]}]"
    args = ["run", builtin_recipe_path("multi_teacher.yaml"), "--runs-dir", tmp_path, "-q",
            *[f"--set={o}" for o in [*TINY, f"distill.teachers={teachers}", "distill.combine=best"]]]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    run_dir = tmp_path / "mnist1d-multi-teacher"
    results = json.loads((run_dir / "results.json").read_text())
    assert list(results["models"]) == ["teacher", "teacher_1", "teacher_2", "student", "alone"]
    assert results["models"]["teacher"]["label"] == "ensemble of 2 teachers (best)"
    assert results["strategy"]["data"]["classes"] == [None, [4, 0, 1, 2, 3]]
    _, meta = load_model(run_dir / "models/teacher_2.pt")
    assert meta["num_classes"] == 5 and meta["class_names"] == ["4", "0", "1", "2", "3"]
    assert results["models"]["teacher_2"]["top1"] <= 0.6  # it never predicts digits 5-9
    stages = {r["stage"] for r in MetricsLog(run_dir / "metrics.jsonl").records()}
    assert {"teach_1", "teach_2", "distill", "alone"} <= stages


def test_online_recipe_with_an_online_teacher(tmp_path):
    results, run_dir = run_builtin("online", tmp_path, *SMALL_TEACHER, "distill.online_teacher=true",
                                   "distill.augment={kind: fgsm, eps: 0.05}")
    assert list(results["models"]) == ["student", "peer_1", "teacher", "alone"]
    assert results["models"]["peer_1"]["label"] == "peer 1 (mutual learning)"
    assert results["models"]["teacher"]["params"] > results["models"]["student"]["params"]
    records = MetricsLog(run_dir / "metrics.jsonl").records()
    assert [r["stage"] for r in records if "epoch" in r] == ["online", "alone"]
    assert {"loss_ce", "loss_kd"} <= set(records[0])
    assert (run_dir / "models/peer_1.pt").is_file() and (run_dir / "models/teacher.pt").is_file()


def test_self_recipe_reports_each_generation_and_resumes(tmp_path, no_html):
    results, run_dir = run_builtin("self", tmp_path, "distill.generations=2")
    assert list(results["models"]) == ["teacher", "gen_1", "student", "ensemble"]
    table = results["strategy"]["tables"][0]
    assert [row[0] for row in table["rows"]] == ["generation 0 (labels only)", "generation 1", "generation 2 (student)",
                                                 "ensemble of generations 1..2"]
    assert "### Generations (test split)" in (run_dir / "report.md").read_text()
    again = distil.run(str(builtin_recipe_path("self.yaml")), overrides=[*TINY, "distill.generations=2"],
                       runs_dir=str(tmp_path / "runs"), resume=True).results
    for role in results["models"]:
        assert again["models"][role]["top1"] == results["models"][role]["top1"]


def test_transfer_set_recipe_learns_from_the_pool_only(tmp_path, no_html):
    results, run_dir = run_builtin("transfer_set", tmp_path, *SMALL_TEACHER, "distill.threshold=0.2",
                                   "distill.labeled=false")
    data = results["strategy"]["data"]
    assert data["student_learned_from"] == "pool only" and abs(data["labeled"] - data["pool"]) <= 1  # fraction 0.5
    assert 0 <= data["pool_share_kept"] <= 1 and data["teacher_accuracy_on_pool"] is not None
    assert results["models"]["student"]["label"] == "student (transfer set)"
    stages = [r["stage"] for r in MetricsLog(run_dir / "metrics.jsonl").records() if "epoch" in r]
    assert stages == ["teach", "distill", "alone"]


def test_continual_recipe_reports_every_task_after_every_step(tmp_path):
    results, run_dir = run_builtin("continual", tmp_path, "distill.tasks=[[0, 1, 2], [3, 4], [5, 6, 7, 8, 9]]",
                                   "distill.scenario=class")
    data = results["strategy"]["data"]
    assert [len(row) for row in data["lwf"]["accuracy"]] == [1, 2, 3]
    assert len(data["joint"]) == 3 and 0 <= data["plain"]["forgetting"] <= 1
    assert set(results["models"]) == {"student", "plain", "joint"}
    report = (run_dir / "report.md").read_text()
    assert "Accuracy per task, learning without forgetting (class scenario)" in report and "forgetting" in report
    stages = [r["stage"] for r in MetricsLog(run_dir / "metrics.jsonl").records() if "epoch" in r]
    assert stages == ["task_1", "lwf_task_2", "lwf_task_3", "plain_task_2", "plain_task_3", "joint"]


def test_schedules_recipe(tmp_path, no_html):
    results, run_dir = run_builtin("schedules", tmp_path, *SMALL_TEACHER, "train.epochs=2")
    records = [r for r in MetricsLog(run_dir / "metrics.jsonl").records() if r.get("stage") == "distill"]
    assert len(records) == 2 and all("loss_kd" in r for r in records)
    assert "student" in results["models"]


def test_augment_recipe(tmp_path, no_html):
    results, run_dir = run_builtin("augment", tmp_path, *SMALL_TEACHER)
    assert 0 <= results["models"]["student"]["top1"] <= 1
    assert "augment" in (run_dir / "recipe.yaml").read_text()


def test_finetune_recipe(tmp_path, no_html):
    results, run_dir = run_builtin("finetune", tmp_path, *SMALL_TEACHER, "finetune.epochs=1")
    assert results["models"]["finetuned"]["label"] == "student (distilled + fine-tuned)"
    assert (run_dir / "models/finetuned.pt").is_file()
    records = [r for r in MetricsLog(run_dir / "metrics.jsonl").records() if r.get("stage") == "finetune"]
    assert len(records) == 1 and records[0]["lr"] <= 3e-4


def blobs(n=240, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    x = torch.randn(n, 6, generator=g) * 0.5 + nn.functional.one_hot(y, 6).float() * 2
    return TensorDataset(x, y)


def test_python_entry_points():
    train, test = blobs(), blobs(seed=1)
    cfg = distil.recipe.TrainConfig(epochs=3, batch_size=32, lr=0.1)
    teachers = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        labels_only = [distil.CE()]  # the teachers learn from the labels
        teachers.append(distil.distill(nn.Linear(6, 4), nn.Linear(6, 4), train, test=test, losses=labels_only,
                                       train_config=cfg).student)
    result = distil.distill(teachers, nn.Linear(6, 4), train, test=test, train_config=cfg)
    assert result.teacher_metrics["top1"] > 0.9 and result.metrics["top1"] > 0.9
    mutual = mutual_learning([nn.Linear(6, 4), nn.Linear(6, 4)], train, test=test, cfg=cfg)
    assert len(mutual.metrics) == 2 and min(m["top1"] for m in mutual.metrics) > 0.9
    generations = born_again(lambda: nn.Linear(6, 4), train, test=test, generations=2, cfg=cfg)
    assert len(generations.models) == 3 and generations.ensemble_metrics["top1"] > 0.9
    pool = torch.stack([x for x, _ in blobs(seed=2)])
    unlabeled = distill_unlabeled(teachers[0], nn.Linear(6, 4), pool, test=test, threshold=0.5, cfg=cfg)
    assert unlabeled.metrics["top1"] > 0.9
    lwf = learn_without_forgetting(nn.Linear(6, 4), train, test, tasks=2, cfg=cfg)
    assert [len(row) for row in lwf.accuracy] == [1, 2] and lwf.average > 0.9
