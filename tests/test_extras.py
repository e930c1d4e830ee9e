"""A lean install: each optional dependency, when missing, gives one line naming the extra to install; the report
and the sweep degrade to no plots without matplotlib."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

import pytest
from torch import nn

from distil.errors import DistilError
from distil.extras import EXTRAS, available, require
from tests.cli_runner import run_cli

ROOT = Path(__file__).resolve().parents[1]


def missing(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    """Make `import name` fail as if the package were not installed."""
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)


def one_line_hint(exc: pytest.ExceptionInfo, extra: str) -> None:
    text = str(exc.value)
    assert "\n" not in text
    assert f"pip install 'distil[{extra}]'" in text


def test_require_returns_the_module_or_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    assert require("json", "report", "x").dumps([1]) == "[1]"
    missing(monkeypatch, "matplotlib")
    assert not available("matplotlib")
    with pytest.raises(DistilError) as exc:
        require("matplotlib", "report", "report.html's plots")
    one_line_hint(exc, "report")
    assert "report.html's plots" in str(exc.value)
    with pytest.raises(ValueError):
        require("json", "no_such_extra", "x")


def test_every_extra_is_in_pyproject_and_all_holds_them() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    optional = extras["optional-dependencies"]
    assert set(EXTRAS) <= set(optional)
    assert {"serve", "onnx", "track", "sweep", "report", "text", "tabular", "all"} <= set(optional)
    everything = optional["all"][0]
    assert all(name in everything for name in EXTRAS)
    core = " ".join(extras["dependencies"])
    for heavy in ("onnx", "fastapi", "uvicorn", "matplotlib", "tensorboard", "mlflow", "optuna", "wandb", "mnist1d"):
        assert heavy not in core


def test_text_needs_the_text_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from distil.text.tokenize import transformers_module

    missing(monkeypatch, "transformers")
    with pytest.raises(DistilError) as exc:
        transformers_module()
    one_line_hint(exc, "text")


def test_onnx_needs_the_onnx_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from distil.compress.onnx_export import OnnxModel, export_onnx

    missing(monkeypatch, "onnxruntime", "onnxscript")
    with pytest.raises(DistilError) as exc:
        OnnxModel(tmp_path / "model.onnx")
    one_line_hint(exc, "onnx")
    with pytest.raises(DistilError) as exc:
        export_onnx(nn.Linear(3, 2), (3,), tmp_path / "model.onnx", opset=18, metadata={})
    one_line_hint(exc, "onnx")
    assert not (tmp_path / "model.onnx").exists()


@pytest.mark.parametrize(("module", "tracker"), [("tensorboard", "TensorBoardTracker"), ("mlflow", "MLflowTracker"),
                                                 ("wandb", "WandbTracker")])
def test_trackers_need_the_track_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, module: str,
                                       tracker: str) -> None:
    from distil import trackers

    missing(monkeypatch, module)
    args = (tmp_path,) if tracker == "TensorBoardTracker" else (tmp_path, "run", {})
    with pytest.raises(DistilError) as exc:
        getattr(trackers, tracker)(*args)
    one_line_hint(exc, "track")


def test_sweep_needs_the_sweep_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from distil.sweep import run_sweep

    missing(monkeypatch, "optuna")
    with pytest.raises(DistilError) as exc:
        run_sweep(None, ["train.lr=1e-3:1e-2"], trials=1, runs_dir=tmp_path)
    one_line_hint(exc, "sweep")


def test_mnist1d_needs_the_data_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    from distil.data import load_dataset
    from distil.recipe import DataConfig

    missing(monkeypatch, "mnist1d.data")
    with pytest.raises(DistilError) as exc:
        load_dataset(DataConfig(name="mnist1d"))
    one_line_hint(exc, "data")


def test_serve_needs_the_serve_extra(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture,
                                     tmp_path: Path) -> None:
    missing(monkeypatch, "fastapi")
    code, _, err = run_cli(["serve", tmp_path], capsys)
    assert code == 2
    assert err.strip().count("\n") == 0 and "pip install 'distil[serve]'" in err


def test_the_report_says_how_to_get_its_plots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from distil.report_html import render_html
    from distil.report_settings import plot_lr_find

    missing(monkeypatch, "matplotlib")
    model = {"label": "teacher", "params": 10, "bytes": 40, "top1": 0.5, "f1": 0.5, "ece": 0.1, "latency_ms": 1.0,
             "throughput": 100.0}
    results = {"name": "r", "dataset": "digits", "test_samples": 10, "device": "cpu", "models": {"teacher": model}}
    page = render_html(results, [], None)
    assert "pip install 'distil[report]'" in page and "<img" not in page and "<table>" in page
    record = {"stage": "distill:lr_find", "lrs": [1e-3, 1e-2], "losses": [1.0, 0.5], "lr": 1e-3}
    assert plot_lr_find([record], tmp_path / "lr.png") is False
    assert not (tmp_path / "lr.png").exists()
