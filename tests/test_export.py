"""ONNX export: a dynamic batch axis, the ONNX Runtime parity check that fails a run, and `distil export`."""

import numpy as np
import pytest
import torch
from cli_runner import run_cli

from distil import checkpoint
from distil.compress import onnx_export
from distil.compress import quantize as q
from distil.compress.files import save_compressed
from distil.compress.onnx_export import OnnxModel, check_parity, export_checked, export_onnx
from distil.data import IndexedTensorDataset
from distil.errors import DistilError
from distil.models import build_model
from distil.recipe import ExportConfig, ModelConfig, Recipe, dump_recipe

SHAPE = (1, 8, 8)
CFG = ModelConfig(name="cnn", channels=[8, 16])


def tiny_cnn(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(CFG, SHAPE, 10).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny CNN and its ONNX file."""
    path = tmp_path_factory.mktemp("onnx") / "cnn.onnx"
    net = tiny_cnn()
    export_onnx(net, SHAPE, path, opset=18, metadata={"class_names": list("abcdefghij")})
    return net, path


def dataset(n: int = 64) -> IndexedTensorDataset:
    return IndexedTensorDataset(torch.randn(n, *SHAPE), torch.zeros(n, dtype=torch.long))


def test_onnx_has_a_dynamic_batch_axis_and_matches_pytorch(exported):
    net, path = exported
    onnx = OnnxModel(path)
    assert onnx.metadata == {"class_names": list("abcdefghij")}
    assert onnx.session.get_inputs()[0].shape[0] == "batch"
    for batch in (1, 5, 33):
        x = torch.randn(batch, *SHAPE)
        out = onnx.run(x.numpy())
        assert out.shape == (batch, 10)
        np.testing.assert_allclose(out, net(x).detach().numpy(), atol=1e-5, rtol=1e-4)
    report = check_parity(onnx, net, dataset(), ExportConfig())
    assert report["samples"] == 64 and report["max_abs_diff"] < 1e-4 and report["top1_changed"] == 0


def test_parity_check_fails_when_onnx_and_pytorch_disagree(exported):
    _, path = exported
    other = tiny_cnn(seed=1)  # stands in for an export that computes something else
    with pytest.raises(DistilError, match=r"export: cnn\.onnx differs from PyTorch by up to .* export\.atol"):
        check_parity(OnnxModel(path), other, dataset(), ExportConfig())
    with pytest.raises(DistilError, match=r"top-1 class differs .* export\.max_top1_change=0\.01"):
        check_parity(OnnxModel(path), other, dataset(), ExportConfig(atol=1e6, max_top1_change=0.01))


def test_a_failed_check_leaves_no_file(tmp_path, monkeypatch):
    def broken_export(model, input_shape, path, **kwargs):
        path.write_bytes(b"not an onnx graph")

    monkeypatch.setattr(onnx_export, "export_onnx", broken_export)
    with pytest.raises(DistilError, match="could not be loaded by ONNX Runtime"):
        export_checked(tiny_cnn(), SHAPE, tmp_path / "m.onnx", dataset(8), ExportConfig(), {})
    assert list(tmp_path.iterdir()) == []


def test_export_command_on_a_run_folder_and_on_a_model_file(tmp_path, capsys):
    run_dir = tmp_path / "tiny"  # what a finished run leaves: its resolved recipe and models/student.pt
    checkpoint.atomic_write_text(run_dir / "recipe.yaml", dump_recipe(Recipe(name="tiny", student=CFG)))
    for path in (run_dir / "models/student.pt", tmp_path / "loose.pt"):
        checkpoint.save_model(path, tiny_cnn(), config=CFG.model_dump(), input_shape=SHAPE, num_classes=10,
                              class_names=[str(i) for i in range(10)], extra={"role": "student"})
    code, out, err = run_cli(["export", run_dir], capsys)
    assert code == 0, err
    assert (run_dir / "models/student.onnx").is_file()
    assert "max |Δ logit|" in out and "top-1 changed on 0.00%" in out and "ONNX Runtime" in out

    loose = tmp_path / "loose.pt"
    code, _, err = run_cli(["export", loose], capsys)
    assert code == 2 and "--data" in err
    code, _, err = run_cli(["export", loose, "--data", "synthetic"], capsys)
    assert code == 2 and "check it on the data it was trained on" in err
    int8 = q.quantize(tiny_cnn(), "dynamic", "x86", torch.randn(4, *SHAPE))
    meta = {"config": CFG.model_dump(), "input_shape": list(SHAPE), "num_classes": 10,
            "class_names": [str(i) for i in range(10)], "extra": {"role": "int8"}}
    save_compressed(run_dir / "models/student-int8.pt", int8, meta, quantized={"mode": "dynamic", "backend": "x86"})
    code, _, err = run_cli(["export", run_dir / "models/student-int8.pt"], capsys)
    assert code == 2 and "int8 model" in err
    code, _, err = run_cli(["export", tmp_path / "missing"], capsys)
    assert code == 2 and "does not exist" in err
