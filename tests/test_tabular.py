"""Tabular / recommendation: encoders, metrics, losses, bad input (one DistilError each, exit 2) and tiny runs."""

import json
import random

import numpy as np
import pytest
import torch
import yaml
from cli_runner import run_cli
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from distil.errors import DistilError
from distil.methods.logits import soft_kl
from distil.recipe import load_recipe
from distil.tabular.config import SchemaConfig
from distil.tabular.encoders import Encoders, encode_columns, encode_records, fit_encoders
from distil.tabular.losses import bernoulli_kd
from distil.tabular.metrics import auc, binary_ece, group_auc, log_loss
from distil.tabular.models import BUILDERS, build_tabular

pytestmark = pytest.mark.usefixtures("one_thread")

SCHEMA = {"label": "click", "categorical": ["user", "device"], "numeric": ["price"], "multi_valued": ["tags"],
          "group": "user"}


def write_csv(path, rows=240, seed=0, extra=None):
    """A click table whose label depends on device, price and tags (so a model can learn it)."""
    rng = random.Random(seed)
    lines = ["user,device,price,tags,click" + (",secret" if extra else "")]
    for _ in range(rows):
        device, price = rng.choice(["ios", "android", "web"]), rng.uniform(0, 10)
        tags = "|".join(rng.sample(["a", "b", "c", "d"], rng.randint(0, 2)))
        score = (device == "ios") + ("a" in tags) - price / 5 + rng.gauss(0, 0.5)
        price_text = "" if rng.random() < 0.1 else f"{price:.2f}"
        row = [f"u{rng.randint(0, 19)}", device, price_text, tags, str(int(score > 0))]
        if extra:
            row.append(f"{score:.3f}")
        lines.append(",".join(row))
    path.write_text("\n".join(lines) + "\n")
    return path


def csv_recipe(tmp_path, csv, schema=None, **tabular):
    """A tiny tabular recipe over `csv`."""
    raw = {"name": "tab", "seed": 0, "data": {"val_fraction": 0.2, "test_fraction": 0.25},
           "tabular": {"dataset": "csv", "path": str(csv), "columns": schema or SCHEMA,
                       "teachers": [{"name": "deepfm", "embed_dim": 4, "hidden": [16]}],
                       "student": {"name": "mlp", "embed_dim": 2, "hidden": [8]}, "latency_batches": [1, 8],
                       "export": False, **tabular},
           "distill": {"losses": [{"name": "ce", "weight": 0.5},
                                  {"name": "bernoulli_kd", "weight": 0.5, "temperature": 2.0}]},
           "train": {"epochs": 8, "batch_size": 32, "lr": 0.01}}
    path = tmp_path / "tab.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_encoders_fit_on_train_and_map_unseen_values_to_the_oov_slot():
    cols = {"c": ["x", "y", "x", "z"], "n": ["1", "", "3", "5"], "m": [["a"], ["a", "b"], [], ["q"]], "y": [0, 1, 0, 1]}
    schema = SchemaConfig(label="y", categorical=["c"], numeric=["n"], multi_valued=["m"])
    enc = fit_encoders(cols, schema, np.array([0, 1, 2]), ["0", "1"], "test")
    x = encode_columns(cols, enc, 4)
    c, n, m = enc.fields
    assert c.vocab == {"x": 1, "y": 2} and x[3, c.offset] == 0  # z was not in training: OOV
    assert n.missing_flag and n.mean == pytest.approx(2.0) and x[1, n.offset] == 0 and x[1, n.offset + 1] == 1
    assert x[3, n.offset] == pytest.approx((5 - 2.0) / n.std)
    assert m.width == 2 and x[1, m.offset:m.offset + 2].tolist() == [2, 3] and x[3, m.offset] == 1  # q: OOV
    again = Encoders.from_json(enc.to_json())
    assert torch.equal(encode_columns(cols, again, 4), x)


def test_encode_records_names_unknown_missing_and_wrong_fields():
    cols = {"c": ["x", "y"], "n": [1.0, 2.0], "y": [0, 1]}
    enc = fit_encoders(cols, SchemaConfig(label="y", categorical=["c"], numeric=["n"]), np.array([0, 1]),
                       ["0", "1"], "t")
    assert encode_records([{"c": "y", "n": 2.0}], enc).tolist() == [[2.0, 1.0]]
    for record, word in (({"c": "x", "n": 1, "zz": 1}, "unknown field 'zz'"), ({"c": "x"}, "field 'n' is missing"),
                         ({"c": ["x"], "n": 1}, r"records\[0\]\.c: a categorical"), ({"c": "x", "n": "tall"}, "'n'")):
        with pytest.raises(DistilError, match=word):
            encode_records([record], enc)


def test_metrics_match_sklearn_and_gauc_weights_groups():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    score = y + rng.normal(0, 1, 500)
    assert auc(y, score) == pytest.approx(roc_auc_score(y, score))
    p = 1 / (1 + np.exp(-score))
    assert log_loss(y, p) == pytest.approx(sk_log_loss(y, p))
    groups = np.array(["a"] * 250 + ["b"] * 250)
    want = (roc_auc_score(y[:250], score[:250]) + roc_auc_score(y[250:], score[250:])) / 2
    assert group_auc(y, score, groups) == pytest.approx(want)
    calibrated = binary_ece(np.array([1, 0]), np.array([0.99, 0.01]))
    off = binary_ece(np.array([1, 1]), np.array([0.5, 0.5]))
    assert calibrated < 0.02 and off == pytest.approx(0.5)


def test_bernoulli_kd_is_two_class_kd_and_zero_at_the_teacher():
    s, t = torch.randn(64), torch.randn(64)
    two = lambda z: torch.stack([torch.zeros_like(z), z], 1)  # noqa: E731
    assert bernoulli_kd(s, t, 3.0).item() == pytest.approx(soft_kl(two(s), two(t), 3.0).item(), rel=1e-4)
    assert bernoulli_kd(t, t, 2.0).item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_model_returns_binary_logits_and_ignores_teacher_only_columns(name):
    cols = {"c": ["x", "y", "x"], "n": [1.0, 2.0, 3.0], "p": [5.0, 1.0, 2.0], "y": [0, 1, 0]}
    schema = SchemaConfig(label="y", categorical=["c"], numeric=["n", "p"], teacher_only=["p"])
    enc = fit_encoders(cols, schema, np.array([0, 1, 2]), ["0", "1"], "t")
    from distil.tabular.config import TabularModelConfig

    model = build_tabular(TabularModelConfig(name=name, embed_dim=3, hidden=[4]), enc.student_fields(), "binary",
                          2).eval()
    full = encode_columns(cols, enc, 3)
    out = model(full)
    assert out.shape == (3, 2) and torch.all(out[:, 0] == 0)
    assert torch.allclose(out, model(full[:, :enc.width(teacher=False)]))


def test_csv_run_reports_auc_gauc_and_the_distilled_student(tmp_path, capsys):
    csv = write_csv(tmp_path / "clicks.csv", extra=True)
    schema = {**SCHEMA, "numeric": ["price", "secret"], "teacher_only": ["secret"]}
    recipe = csv_recipe(tmp_path, csv, schema, export=True)
    code, out, err = run_cli(["run", recipe, "--runs-dir", tmp_path / "runs", "--quiet"], capsys)
    assert code == 0, err
    run = tmp_path / "runs" / "tab"
    results = json.loads((run / "results.json").read_text())
    student = results["models"]["student"]
    assert {"auc", "gauc", "logloss", "ece", "latency_b1_ms", "latency_b8_ms"} <= set(student)
    assert results["teacher_only"] == ["secret"] and student["fields"] == "serving-time"
    assert results["models"]["teacher_deepfm"]["auc"] > 0.75  # the teacher sees the score itself
    assert "| AUC |" in (run / "report.md").read_text().replace(" gAUC", "")
    encoders = Encoders.from_json((run / "encoders.json").read_text())
    assert results["export"]["input_width"] == encoders.width(teacher=False) < encoders.width()
    assert results["export"]["max_abs_diff"] < 1e-3


def test_multiclass_and_regression_tasks_get_their_metrics(tmp_path):
    from distil.pipeline import run_recipe

    csv = tmp_path / "t.csv"
    rng = random.Random(1)
    rows = ["a,b,y,r"] + [f"{rng.choice('pqr')},{rng.random():.3f},{rng.choice('xyz')},{rng.random() * 10:.2f}"
                          for _ in range(120)]
    csv.write_text("\n".join(rows) + "\n")
    multi = {"label": "y", "task": "multiclass", "classes": 3, "categorical": ["a"], "numeric": ["b"]}
    result = run_recipe(load_recipe(csv_recipe(tmp_path, csv, multi, teachers=[{"name": "lr"}], student={"name": "fm"}),
                                    ["distill.losses=[{name: ce}, {name: kd, temperature: 2}]"]), tmp_path / "runs")
    assert {"accuracy", "logloss"} <= set(result.results["models"]["student"])
    reg = {"label": "r", "task": "regression", "categorical": ["a"], "numeric": ["b"]}
    result = run_recipe(load_recipe(csv_recipe(tmp_path, csv, reg, teachers=[{"name": "wide_deep", "hidden": [8]}]),
                                    ["distill.losses=[{name: mse_label}, {name: mse_logits}]", "name=reg"]),
                        tmp_path / "runs")
    rmse = result.results["models"]["student"]["rmse"]
    assert 0 < rmse < 10


def test_movielens_subset_has_user_item_fields_privileged_ones_and_a_gated_ensemble(tmp_path):
    from distil.pipeline import run_recipe
    from distil.recipe import validate_recipe

    raw = {"name": "ml", "data": {"limit": 1500},
           "tabular": {"privileged": True, "distill_from": "ensemble", "latency_batches": [4], "export": False,
                       "teachers": [{"name": "dcn_v2", "embed_dim": 4, "hidden": [8], "cross_layers": 1},
                                    {"name": "fm", "embed_dim": 4}],
                       "student": {"name": "lr"}},
           "distill": {"losses": [{"name": "ce"}, {"name": "ensemble_gate", "temperature": 1.0}]},
           "train": {"epochs": 1, "batch_size": 128, "lr": 0.01}}
    results = run_recipe(validate_recipe(raw), tmp_path / "runs").results
    assert results["rows"] == {"train": 1050, "val": 150, "test": 300}
    assert 0.3 < results["positive_rate"] < 0.8
    assert set(results["teacher_only"]) == {"item_mean_rating", "user_mean_rating", "hour", "weekday"}
    assert results["distilled_from"] == "ensemble" and "gauc" in results["models"]["ensemble"]


BAD = [
    ("absent", {**SCHEMA, "categorical": ["user", "browser"]}, "column 'browser' is not in"),
    ("classes", {**SCHEMA, "label": "device", "categorical": ["user"]}, "3 distinct values"),
    ("missing", {**SCHEMA, "numeric": ["empty"]}, "'empty' is missing in every training row"),
    ("multiclass", {**SCHEMA, "label": "device", "task": "multiclass", "classes": 2, "categorical": ["user"]},
     "task multiclass declares 2 classes"),
    ("vocabulary", {**SCHEMA, "max_vocab": 5}, "distinct training values, more than max_vocab 5"),
]


@pytest.mark.parametrize(("case", "schema", "message"), BAD, ids=[b[0] for b in BAD])
def test_bad_tables_fail_with_one_line_and_exit_2(tmp_path, capsys, case, schema, message):
    csv = write_csv(tmp_path / "c.csv", rows=200)
    if case == "missing":
        lines = csv.read_text().splitlines()
        csv.write_text("\n".join([lines[0] + ",empty", *[line + "," for line in lines[1:]]]) + "\n")
    code, out, err = run_cli(["run", csv_recipe(tmp_path, csv, schema), "--runs-dir", tmp_path / "r"], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1


def test_ragged_csv_rows_fail_naming_the_line(tmp_path, capsys):
    csv = write_csv(tmp_path / "c.csv", rows=30)
    csv.write_text(csv.read_text() + "u1,ios,3.0\n")
    code, _, err = run_cli(["run", csv_recipe(tmp_path, csv), "--runs-dir", tmp_path / "r"], capsys)
    assert code == 2 and "line 32 has 3 fields" in err


def test_a_million_distinct_categories_are_refused_unless_hashed():
    values = [f"id{i}" for i in range(10**6)]
    cols = {"id": values, "y": [0, 1] * (10**6 // 2)}
    train = np.arange(10**6)
    with pytest.raises(DistilError, match="1000000 distinct training values.*hash_buckets"):
        fit_encoders(cols, SchemaConfig(label="y", categorical=["id"]), train, ["0", "1"], "t")
    enc = fit_encoders(cols, SchemaConfig(label="y", categorical=["id"], hash_buckets={"id": 1000}), train,
                       ["0", "1"], "t")
    assert enc.fields[0].size == 1001
    codes = encode_columns({"id": values[:5000]}, enc, 5000)[:, 0]
    assert codes.min() >= 1 and codes.max() <= 1000 and len(set(codes.tolist())) > 900


def test_a_tabular_run_uses_its_threads_and_restores_the_callers(tmp_path, monkeypatch):
    from distil.pipeline import run_recipe

    seen = []
    monkeypatch.setattr("distil.tabular.run.TabularRun.execute", lambda self: seen.append(torch.get_num_threads())
                        or {"task": "binary", "models": {}, "distilled_from": "x"})
    recipe = load_recipe(csv_recipe(tmp_path, write_csv(tmp_path / "c.csv", rows=40)), ["tabular.threads=1"])
    torch.set_num_threads(2)
    try:
        run_recipe(recipe, tmp_path / "runs")
        assert seen == [1] and torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)
