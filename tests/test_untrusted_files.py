"""Files never run code: a planted pickle reaches no entry point's unpickler, and bad files fail in one line."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run_cli

import distil
from distil import checkpoint
from distil.errors import DistilError
from distil.explain.bundle import BUNDLE, OLD_BUNDLE
from distil.models import build_model
from distil.recipe import ModelConfig, dump_recipe, load_recipe

pytestmark = pytest.mark.usefixtures("one_thread")

META = {"config": {"name": "mlp", "hidden": [8]}, "input_shape": [1, 8, 8], "num_classes": 10,
        "class_names": [str(i) for i in range(10)], "extra": {}}


class Payload:
    """Unpickling this object writes `marker`: what a crafted file would do with a shell command."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('ran')",)


def plant_model(path: Path, marker: Path) -> Path:
    """A model file with a valid checksum whose weights are a code-running pickle."""
    checkpoint.save(path, {"format": checkpoint.MODEL_FORMAT, "metadata": json.dumps(META),
                           "state_dict": {"0.weight": Payload(marker)}})
    return path


def one_line_exit_2(args: list, capsys) -> str:
    code, _, err = run_cli(args, capsys)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    return err


def test_the_planted_file_is_live_when_unpickled_unsafely(tmp_path: Path) -> None:
    marker = tmp_path / "marker"
    path = plant_model(tmp_path / "evil.pt", marker)
    torch.load(path, weights_only=False)  # what distil did before: the test would catch a regression
    assert marker.read_text() == "ran"


@pytest.mark.parametrize("command", ["eval", "export", "serve"])
def test_model_file_commands_refuse_a_planted_pickle(tmp_path: Path, capsys, command: str) -> None:
    marker = tmp_path / "marker"
    path = plant_model(tmp_path / "evil.pt", marker)
    args = {"eval": ["eval", path, "--data", "digits"], "export": ["export", path, "--data", "digits"],
            "serve": ["serve", path, "--port", "1"]}[command]
    err = one_line_exit_2(args, capsys)
    assert "evil.pt holds objects other than tensors and plain data" in err and not marker.exists()


def test_serve_loading_and_distil_load_refuse_a_planted_pickle(tmp_path: Path) -> None:
    from distil.serve import load_served

    marker = tmp_path / "marker"
    path = plant_model(tmp_path / "evil.pt", marker)
    for load in (distil.load, load_served):
        with pytest.raises(DistilError, match="would not open|will not open"):
            load(str(path) if load is distil.load else path)
    assert not marker.exists()


@pytest.mark.parametrize("field", ["teacher.checkpoint", "student.name"])
def test_a_recipe_naming_a_planted_model_file_fails_before_training(tmp_path: Path, tiny_recipe: Path, capsys,
                                                                    field: str) -> None:
    marker = tmp_path / "marker"
    path = plant_model(tmp_path / "evil.pt", marker)
    value = path if field == "teacher.checkpoint" else f"checkpoint:{path}"
    err = one_line_exit_2(["run", tiny_recipe, "--set", f"{field}={value}", "--runs-dir", tmp_path / "runs", "-q"],
                          capsys)
    assert "will not open" in err and not marker.exists()
    assert not (tmp_path / "runs" / "tiny" / "models").exists()


@pytest.mark.parametrize("planted", ["checkpoints/teach.ckpt", "models/teacher.pt"])
def test_resume_refuses_a_planted_checkpoint_or_model(tmp_path: Path, tiny_recipe: Path, capsys,
                                                      planted: str) -> None:
    marker = tmp_path / "marker"
    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / "recipe.yaml").write_text(dump_recipe(load_recipe(tiny_recipe)))
    (run_dir / planted).parent.mkdir()
    if planted.endswith(".ckpt"):
        checkpoint.save(run_dir / planted, {"stage": "teach", "epoch": 1, "model": Payload(marker)})
    else:
        plant_model(run_dir / planted, marker)
    err = one_line_exit_2(["run", tiny_recipe, "--resume", "--runs-dir", tmp_path / "runs", "-q"], capsys)
    assert "will not open" in err and Path(planted).name in err and not marker.exists()


def test_explain_refuses_a_planted_bundle(tmp_path: Path, capsys) -> None:
    marker = tmp_path / "marker"
    (tmp_path / "explain").mkdir()
    evil = np.empty(1, dtype=object)
    evil[0] = Payload(marker)
    np.savez(tmp_path / "explain" / BUNDLE, __header__=evil)
    err = one_line_exit_2(["explain", tmp_path], capsys)
    assert "is not an intact distil explain file" in err
    (tmp_path / "explain" / BUNDLE).unlink()
    (tmp_path / "explain" / OLD_BUNDLE).write_bytes(pickle.dumps(Payload(marker)))
    err = one_line_exit_2(["explain", tmp_path], capsys)
    assert "older distil as a pickle" in err and "--overwrite" in err
    assert not marker.exists()


def good_model(path: Path) -> Path:
    cfg = ModelConfig(name="mlp", hidden=[8])
    checkpoint.save_model(path, build_model(cfg, (1, 8, 8), 10), config=cfg.model_dump(), input_shape=(1, 8, 8),
                          num_classes=10, class_names=META["class_names"])
    return path


def bare_torch_save(path: Path) -> None:
    torch.save({"format": checkpoint.MODEL_FORMAT, **META}, path)


def truncated(path: Path) -> None:
    data = good_model(path).read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flipped_weight(path: Path) -> None:
    data = bytearray(good_model(path).read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def missing_key(path: Path) -> None:
    meta = {k: v for k, v in META.items() if k != "num_classes"}
    checkpoint.save(path, {"format": checkpoint.MODEL_FORMAT, "metadata": json.dumps(meta), "state_dict": {}})


def python_factory(path: Path) -> None:
    meta = {**META, "config": {"name": "python:helper_models:expects_40_features"}}
    checkpoint.save(path, {"format": checkpoint.MODEL_FORMAT, "metadata": json.dumps(meta), "state_dict": {}})


@pytest.mark.parametrize(("damage", "message"), [
    (bare_torch_save, "has no checksum trailer"),
    (lambda p: p.write_bytes(pickle.dumps({"format": "x"})), "has no checksum trailer"),
    (truncated, "truncated or corrupt"),
    (flipped_weight, "SHA-256 mismatch"),
    (missing_key, "its metadata lacks num_classes"),
    (python_factory, "would import and run Python code"),
])
def test_a_bad_model_file_is_one_line_naming_the_file(tmp_path: Path, capsys, damage, message: str) -> None:
    path = tmp_path / "model.pt"
    damage(path)
    err = one_line_exit_2(["eval", path, "--data", "digits"], capsys)
    assert message in err and str(path) in err


def test_model_files_hold_json_metadata_and_files_of_the_previous_format_still_load(tmp_path: Path) -> None:
    path = good_model(tmp_path / "new.pt")
    blob = torch.load(path, weights_only=True)
    assert blob["format"] == "distil-model-2" and json.loads(blob["metadata"])["num_classes"] == 10
    old = tmp_path / "old.pt"  # distil-model-1: the metadata fields as plain data beside the weights
    checkpoint.save(old, {"format": "distil-model-1", **META, "state_dict": blob["state_dict"]})
    model, meta = distil.load(str(old))
    assert meta["num_classes"] == 10 and model(torch.zeros(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(DistilError, match="extra.*not plain JSON data"):
        checkpoint.save_model(tmp_path / "x.pt", model, config={}, input_shape=(1,), num_classes=1, class_names=[],
                              extra={"fn": print})


def test_a_python_factory_model_evaluates_with_trust_code(tmp_path: Path, capsys) -> None:
    cfg = ModelConfig(name="python:user_models:make_model")
    checkpoint.save_model(tmp_path / "m.pt", build_model(cfg, (1, 8, 8), 10), config=cfg.model_dump(),
                          input_shape=(1, 8, 8), num_classes=10, class_names=META["class_names"])
    err = one_line_exit_2(["eval", tmp_path / "m.pt", "--data", "digits"], capsys)
    assert "--trust-code" in err
    code, out, err = run_cli(["eval", tmp_path / "m.pt", "--data", "digits", "--trust-code"], capsys)
    assert code == 0 and "top-1" in out.lower(), err


def test_a_python_factory_model_loads_when_trusted(tmp_path: Path) -> None:
    cfg = ModelConfig(name="python:helper_models:expects_40_features")
    model = build_model(cfg, (40,), 3)
    checkpoint.save_model(tmp_path / "m.pt", model, config=cfg.model_dump(), input_shape=(40,), num_classes=3,
                          class_names=["a", "b", "c"])
    with pytest.raises(DistilError, match="trust_code=True"):
        distil.load(str(tmp_path / "m.pt"))
    loaded, _ = distil.load(str(tmp_path / "m.pt"), trust_code=True)
    assert torch.equal(loaded(torch.ones(1, 40)), model.eval()(torch.ones(1, 40)))
