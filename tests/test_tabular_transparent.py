"""Transparent students of a tabular run: readable features (values, indicators, positive rates) and the run's
section with AUC, fidelity and the distilled rules."""

import json

import numpy as np
import pytest
from test_tabular import SCHEMA, csv_recipe, write_csv

from distil.recipe import load_recipe
from distil.tabular import transparent
from distil.tabular.config import SchemaConfig
from distil.tabular.encoders import encode_columns, fit_encoders
from distil.tabular.transparent import featurize, readable_features

pytestmark = pytest.mark.usefixtures("one_thread")


def test_readable_features_name_values_and_compute_smoothed_positive_rates(monkeypatch):
    cols = {"u": ["a", "a", "b", "c", "c", "c"], "n": ["1", "", "3", "4", "5", "6"],
            "m": [["x"], ["x", "y"], [], ["y"], ["x"], []], "y": [1, 1, 0, 0, 0, 1]}
    schema = SchemaConfig(label="y", categorical=["u"], numeric=["n"], multi_valued=["m"])
    rows = np.arange(6)
    enc = fit_encoders(cols, schema, rows, ["0", "1"], "t")
    x = encode_columns(cols, enc, 6)
    y = np.array(cols["y"], dtype=np.float64)
    monkeypatch.setattr(transparent, "RATE_ABOVE", 2)  # u has 4 codes: it gets a rate column too
    names, makers = readable_features(enc, x, y)
    assert names[:4] == ["u positive rate", "u = c", "u = a", "u = b"]
    assert {"n", "n missing", "m has x", "m has y"} <= set(names)
    features = featurize(makers, x)
    prior, k = y.mean(), transparent.SMOOTHING
    assert features[0, 0] == pytest.approx((2 + k * prior) / (2 + k))  # a: 2 of 2 positive
    assert features[:, names.index("n")][2] == pytest.approx(3.0)  # in its own units
    assert features[1, names.index("n missing")] == 1
    assert features[:, names.index("m has y")].tolist() == [0, 1, 0, 1, 0, 0]


def test_a_run_reports_transparent_students_with_fidelity_and_rules(tmp_path):
    from distil.pipeline import run_recipe

    csv = write_csv(tmp_path / "clicks.csv", rows=300)
    recipe = load_recipe(csv_recipe(tmp_path, csv, SCHEMA, transparent=["rules", "linear"]))
    result = run_recipe(recipe, tmp_path / "runs", quiet=True)
    record = json.loads((result.run_dir / "results.json").read_text())["transparent"]
    rules = record["students"]["rules"]
    assert set(record["students"]) == {"rules", "linear"} and 0.5 <= rules["distilled"]["fidelity"] <= 1
    assert rules["text"][0].strip().startswith("1. IF") and "ELSE" in rules["text"][-1]
    assert record["students"]["linear"]["distilled"]["auc"] > 0.6  # device and price explain the clicks
    report = (result.run_dir / "report.md").read_text()
    assert "## Transparent students" in report and "device = ios" in report
    assert "transparent rules: AUC" in result.text
