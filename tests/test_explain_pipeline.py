"""The explain stage inside a whole run, its report section, resume, and the `distil explain` command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cli_runner import run_cli
from conftest import TINY_RECIPE
from threads import one_torch_thread

import distil
from distil.explain import stage
from distil.pipeline import Run
from distil.runlog import MetricsLog

EXPLAIN = "explain: {query_points: 100, soft_tree: {depth: 2, epochs: 2}, linear: {iterations: 100}}\n"
PLOTS = ["tree.png", "importance.png", "linear_weights.png", "soft_tree_filters.png"]


@pytest.fixture(scope="module")
def explained_run(tmp_path_factory) -> Path:
    """One tiny digits run with every transparent student (one thread: tiny tensors on a shared machine)."""
    folder = tmp_path_factory.mktemp("explain")
    recipe = folder / "tiny.yaml"
    recipe.write_text(TINY_RECIPE + EXPLAIN)
    with one_torch_thread():
        distil.run(str(recipe), runs_dir=str(folder / "runs"))
    return folder / "runs" / "tiny"


def test_a_run_with_explain_writes_students_plots_results_and_report(explained_run: Path) -> None:
    for name in [*PLOTS, "students.npz"]:
        assert (explained_run / "explain" / name).is_file(), name
    results = json.loads((explained_run / "results.json").read_text())["explain"]
    assert set(results["students"]) == {"tree", "linear", "rules", "soft_tree"}
    for variants in results["students"].values():
        for m in variants.values():
            assert {"top1", "fidelity", "fidelity_perturbed", "size"} <= set(m)
    assert results["transfer"]["query_points"] == 100
    assert results["plots"] == [f"explain/{name}" for name in PLOTS]
    teacher_top1 = json.loads((explained_run / "results.json").read_text())["models"]["teacher"]["top1"]
    assert results["teacher"]["top1"] == pytest.approx(teacher_top1)
    report = (explained_run / "report.md").read_text()
    assert "## Transparent students" in report and "fidelity distilled" in report
    assert all(f"(explain/{name})" in report for name in PLOTS)
    stages = {r["stage"] for r in MetricsLog(explained_run / "metrics.jsonl").records()}
    assert {"explain_soft_tree", "explain_soft_tree_alone"} <= stages


def test_resume_reloads_the_students_instead_of_refitting(explained_run: Path, monkeypatch) -> None:
    def refit(*args, **kwargs):
        raise AssertionError("the explain stage refitted on resume")

    monkeypatch.setattr(stage, "fit_students", refit)
    before = json.loads((explained_run / "results.json").read_text())["explain"]
    run = Run(distil.load_recipe(explained_run / "recipe.yaml"), explained_run.parent, resume=True, quiet=True)
    assert stage.run_explain(run, teacher=None) == before


def test_cli_prints_rules_importance_and_a_decision_path(explained_run: Path, capsys) -> None:
    (explained_run / "explain" / "tree.png").unlink()
    code, out, err = run_cli(["explain", explained_run, "--input", "3"], capsys)
    assert code == 0, err
    assert "IF pixel[" in out and " THEN " in out and "ELSE" in out
    assert "global feature importance" in out and "soft_tree" in out
    assert "test sample 3: label" in out and "tree predicts" in out and "leaf " in out
    assert "rule " in out and "p(right)" in out and "logit" in out
    assert (explained_run / "explain" / "tree.png").is_file()  # re-rendered from the saved students


def test_cli_errors_are_one_line(explained_run: Path, tmp_path: Path, capsys) -> None:
    code, _, err = run_cli(["explain", explained_run, "--input", "100000"], capsys)
    assert code == 2 and "--input: 100000 is not a test sample" in err and err.count("\n") == 1
    code, _, err = run_cli(["explain", tmp_path], capsys)
    assert code == 2 and "explain:" in err and "students.npz does not exist" in err
    (tmp_path / "explain").mkdir()
    (tmp_path / "explain" / "students.npz").write_bytes(b"not an archive")
    code, _, err = run_cli(["explain", tmp_path], capsys)
    assert code == 2 and "is not an intact distil explain file" in err and err.count("\n") == 1


def test_bad_explain_section_fails_before_training(tmp_path: Path, capsys) -> None:
    recipe = tmp_path / "bad.yaml"
    recipe.write_text(TINY_RECIPE + "explain: {students: [tree, forest]}\n")
    code, _, err = run_cli(["run", recipe, "--runs-dir", tmp_path / "runs", "-q"], capsys)
    assert code == 2 and "explain.students.1" in err
    assert not (tmp_path / "runs" / "tiny" / "models").exists()
