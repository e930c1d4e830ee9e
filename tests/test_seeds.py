"""`distil run --seeds N`: paired students per seed, the teacher trained once, the verdict in every output;
the teacher store reuses a teacher with the same fingerprint."""

import json

from cli_runner import run_cli

from distil.runlog import MetricsLog


def teach_epochs(run_dir):
    return [r for r in MetricsLog(run_dir / "metrics.jsonl").records() if r.get("stage") == "teach" and "epoch" in r]


def test_two_seeds_write_the_paired_verdict_and_train_the_teacher_once(tiny_recipe, tmp_path, capsys):
    runs = tmp_path / "runs"
    code, out, err = run_cli(["run", tiny_recipe, "--runs-dir", runs, "--seeds", "2", "-q"], capsys)
    assert code == 0, err
    run_dir = runs / "tiny"
    results = json.loads((run_dir / "results.json").read_text())
    verdict = results["verdict"]
    assert verdict["seeds"] == [1, 2] and verdict["teacher_shared"]
    rows = verdict["per_seed"]
    assert verdict["test"]["deltas"] == [r["student"] - r["alone"] for r in rows]
    assert verdict["test"]["word"] in ("gain", "no detectable gain", "loss")
    assert {"val_best", "val_last"} <= set(verdict)
    assert rows[0]["student"] == results["models"]["student"]["top1"]
    # the teacher trained once: in the first run, and the second seed loaded its file
    assert len(teach_epochs(run_dir)) == 2
    second = run_dir / "seeds" / "seed_2"
    assert not teach_epochs(second)
    sub = json.loads((second / "results.json").read_text())
    assert sub["models"]["teacher"]["top1"] == results["models"]["teacher"]["top1"]
    assert sub["models"]["student"]["top1"] == rows[1]["student"]
    assert [r for r in MetricsLog(run_dir / "metrics.jsonl").records() if r["stage"] == "verdict"]
    report = (run_dir / "report.md").read_text()
    assert "Verdict:" in report and "over 2 seeds" in report and "best epoch" in report and "last epoch" in report
    assert "over 2 seeds" in (run_dir / "report.html").read_text()
    code, out, _ = run_cli(["report", run_dir], capsys)
    assert code == 0 and "Verdict:" in out and "over 2 seeds" in out


def test_a_repeated_run_reuses_the_stored_teacher(tiny_recipe, tmp_path, capsys, caplog):
    runs = tmp_path / "runs"
    assert run_cli(["run", tiny_recipe, "--runs-dir", runs, "-q"], capsys)[0] == 0
    first = json.loads((runs / "tiny" / "results.json").read_text())
    assert "teacher_reused" not in first and len(teach_epochs(runs / "tiny")) == 2
    caplog.clear()
    code, _, err = run_cli(["run", tiny_recipe, "--runs-dir", runs, "--set", "name=again", "-q"], capsys)
    assert code == 0, err
    assert "teacher reused" in caplog.text and not teach_epochs(runs / "again")
    again = json.loads((runs / "again" / "results.json").read_text())
    assert again["models"]["teacher"]["top1"] == first["models"]["teacher"]["top1"]
    assert "teacher reused" in (runs / "again" / "report.md").read_text()
    # another seed is another teacher
    caplog.clear()
    code, _, err = run_cli(["run", tiny_recipe, "--runs-dir", runs, "--set", "name=other", "--set", "seed=5", "-q"],
                           capsys)
    assert code == 0 and "teacher reused" not in caplog.text and len(teach_epochs(runs / "other")) == 2
