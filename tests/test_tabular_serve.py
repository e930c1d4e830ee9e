"""Tabular model files as a stranger uses them: `distil serve` takes raw records (the saved encoders applied by the
"records" preprocessing), `distil eval` reads the table the file records, `--seeds N` gives the paired verdict."""

import json

import pytest
import torch
from cli_runner import run_cli
from test_serve import Server
from test_tabular import csv_recipe, write_csv

from distil.compress.files import load_any
from distil.errors import DistilError
from distil.preprocess import InputError, preprocessor
from distil.recipe import load_recipe
from distil.tabular.encoders import Encoders, encode_records

pytestmark = pytest.mark.usefixtures("one_thread")

JSON = {"Content-Type": "application/json"}


@pytest.fixture(scope="module")
def tab_run(tmp_path_factory):
    """A finished tiny CSV run (teacher with a teacher-only field, ONNX student, two paired seeds)."""
    from distil.pipeline import run_recipe

    root = tmp_path_factory.mktemp("tabserve")
    csv = write_csv(root / "clicks.csv", extra=True)
    schema = {"label": "click", "categorical": ["user", "device"], "numeric": ["price", "secret"],
              "multi_valued": ["tags"], "group": "user", "teacher_only": ["secret"]}
    recipe = load_recipe(csv_recipe(root, csv, schema, export=True), ["eval.seeds=2", "train.epochs=4"])
    return run_recipe(recipe, root / "runs", quiet=True)


@pytest.fixture(scope="module")
def server(tab_run):
    srv = Server(tab_run.run_dir, tab_run.run_dir / "serve.log")
    yield srv
    srv.stop()


def post(server, body) -> tuple[int, dict]:
    return server.call("POST", "/predict", json.dumps(body).encode(), JSON)


def test_metadata_example_works_when_pasted_and_matches_the_model(server, tab_run):
    status, meta = server.call("GET", "/metadata")
    assert status == 200 and meta["format"] == "onnx" and meta["request"]["field"] == "records"
    assert [f["name"] for f in meta["input"]["fields"]] == ["user", "device", "price", "tags"]  # no teacher-only
    body = meta["request"]["body"]
    record = body["records"][0]
    assert isinstance(record["device"], str) and isinstance(record["tags"], list)
    status, out = post(server, body)
    assert status == 200 and out["class_names"] == ["0", "1"]
    model, file_meta = load_any(tab_run.run_dir / "models" / "student.pt")
    enc = Encoders.from_json(file_meta["preprocess"]["encoders"])
    p = torch.softmax(model(encode_records([record], enc)), 1)[0].tolist()
    assert out["probabilities"][0] == pytest.approx(p, abs=1e-4)
    assert meta["metrics"]["auc"] == json.loads((tab_run.run_dir / "results.json").read_text())["models"][
        "student"]["auc"]


def test_records_differ_in_prediction_and_unseen_values_are_accepted(server):
    base = {"user": "u1", "device": "ios", "price": 1.0, "tags": ["a"]}
    records = [base, {**base, "device": "web", "price": 9.5, "tags": []}, {**base, "user": "never-seen",
                                                                          "price": None, "tags": None}]
    status, out = post(server, {"records": records})
    assert status == 200 and len(out["probabilities"]) == 3
    assert out["probabilities"][0][1] != pytest.approx(out["probabilities"][1][1], abs=1e-3)


@pytest.mark.parametrize(("record", "words"), [
    ({"user": "u1", "device": "ios", "price": 1.0, "tags": [], "colour": "red"}, ["unknown field 'colour'"]),
    ({"user": "u1", "device": "ios", "tags": []}, ["field 'price' is missing"]),
    ({"user": "u1", "device": "ios", "price": "cheap", "tags": []}, ["records[0].price", "numeric"]),
    ({"user": "u1", "device": ["ios"], "price": 1.0, "tags": []}, ["records[0].device", "categorical"]),
    ({"user": "u1", "device": "ios", "price": 1.0, "tags": "a"}, ["records[0].tags", "list of strings"]),
    ({"user": "u1", "device": "ios", "price": 1.0, "tags": [], "secret": 2.0}, ["unknown field 'secret'"]),
], ids=["unknown", "missing", "numeric-text", "categorical-list", "bag-string", "teacher-only"])
def test_bad_records_get_a_422_naming_the_field(server, record, words):
    status, out = post(server, {"records": [record]})
    assert status == 422 and all(w in out["detail"] for w in words), out


def test_the_pytorch_teacher_file_takes_its_teacher_only_field_too(tab_run):
    _, meta = load_any(tab_run.run_dir / "models" / "teacher_deepfm.pt")
    pre = preprocessor(meta)
    example = pre.example()
    assert "secret" in example and pre.encode([example]).shape == (1, meta["input_shape"][0])
    with pytest.raises(InputError, match="field 'secret' is missing"):
        pre.encode([{k: v for k, v in example.items() if k != "secret"}])


def test_distil_eval_of_a_tabular_model_file_matches_the_run(tab_run, capsys):
    code, out, err = run_cli(["eval", tab_run.run_dir / "models" / "student.pt"], capsys)
    assert code == 0, err
    auc = json.loads((tab_run.run_dir / "results.json").read_text())["models"]["student"]["auc"]
    assert f"AUC       {auc:.4f}" in out and "gAUC" in out and "serving-time fields" in out
    code, out, err = run_cli(["eval", tab_run.run_dir / "models" / "teacher_deepfm.pt", "--split", "val"], capsys)
    assert code == 0 and "all fields" in out and "gAUC" not in out


def test_seeds_give_a_paired_verdict_on_auc_and_log_loss(tab_run):
    verdict = tab_run.results["verdict"]
    assert verdict["seeds"] == [0, 1] and verdict["metric"] == "auc"
    rows = verdict["per_seed"]
    assert rows[0]["student_auc"] == tab_run.results["models"]["student"]["auc"]
    assert rows[1]["student_auc"] != rows[0]["student_auc"]  # a second seed really trained
    auc = verdict["metrics"]["auc"]
    assert auc["deltas"] == pytest.approx([r["student_auc"] - r["alone_auc"] for r in rows])
    assert auc["low"] <= auc["mean"] <= auc["high"] and not verdict["metrics"]["logloss"]["higher_is_better"]
    assert (tab_run.run_dir / "models" / "alone_seed1.pt").is_file()
    assert "Verdict over paired seeds" in (tab_run.run_dir / "report.md").read_text()
    assert "Verdict:" in tab_run.text and "over 2 seeds" in tab_run.text


def test_seeds_without_a_student_alone_fail_with_exit_2(tmp_path, capsys):
    csv = write_csv(tmp_path / "c.csv", rows=60)
    code, _, err = run_cli(["run", csv_recipe(tmp_path, csv), "--seeds", "2", "--set", "distill.baseline=false",
                            "--runs-dir", tmp_path / "r"], capsys)
    assert code == 2 and "distill.baseline: true" in err


def test_a_model_file_without_its_tabular_spec_is_refused(tab_run, tmp_path):
    from distil import checkpoint

    meta, state = checkpoint.read_model_file(tab_run.run_dir / "models" / "student.pt")
    meta["config"].pop("tabular")
    bad = tmp_path / "bad.pt"
    checkpoint.save_weights(bad, state, {k: v for k, v in meta.items() if k != "format"})
    with pytest.raises(DistilError, match="tabular spec"):
        load_any(bad)


def test_distil_report_rerenders_a_tabular_run(tab_run, capsys):
    (tab_run.run_dir / "report.md").unlink()
    code, out, err = run_cli(["report", tab_run.run_dir], capsys)
    assert code == 0, err
    assert "student (distilled)" in out and "Verdict" in (tab_run.run_dir / "report.md").read_text()
