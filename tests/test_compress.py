"""Quantization and pruning of a student, their model files, and the compress / export stages of a whole run."""

import json

import pytest
import torch
from cli_runner import run_cli
from torch import nn

from distil.compress import prune as pr
from distil.compress import quantize as q
from distil.compress.files import load_any, save_compressed
from distil.errors import DistilError
from distil.models import build_model
from distil.recipe import ModelConfig, load_recipe
from distil.runlog import MetricsLog

SHAPE = (1, 8, 8)


def model(name: str, **kwargs) -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(name=name, **kwargs), SHAPE, 10).eval()


def meta_of(cfg: ModelConfig) -> dict:
    return {"config": cfg.model_dump(), "input_shape": list(SHAPE), "num_classes": 10,
            "class_names": [str(i) for i in range(10)], "extra": {"role": "test"}}


def kill_channels(net: nn.Module, example: torch.Tensor, amount: float) -> None:
    """Make the first `amount` share of every prunable layer's channels dead: zero weights, BN shift 0, ReLU'd away."""
    for group in pr.channel_groups(net, example):
        producer = net.get_submodule(group.producer)
        dead = torch.arange(round(group.channels * amount))
        with torch.no_grad():
            producer.weight[dead] = 0
            if producer.bias is not None:
                producer.bias[dead] = 0
            for path in group.norms:
                norm = net.get_submodule(path)
                norm.bias[dead] = 0
                norm.running_mean[dead] = 0


@pytest.mark.parametrize("name, kwargs", [("cnn", {"channels": [8, 16]}), ("mlp", {"hidden": [32, 16]})])
def test_structured_pruning_removes_dead_channels_without_changing_outputs(name, kwargs):
    net = model(name, **kwargs)
    x = torch.randn(16, *SHAPE)
    kill_channels(net, x[:2], 0.5)
    before, params = net(x), sum(p.numel() for p in net.parameters())
    widths = pr.prune_channels(net, x[:2], 0.5)
    assert sorted(widths.values()) == sorted(size // 2 for size in kwargs.get("channels") or kwargs["hidden"])
    assert sum(p.numel() for p in net.parameters()) < 0.6 * params
    torch.testing.assert_close(net(x), before, atol=1e-5, rtol=1e-5)


def test_structured_pruning_shrinks_every_layer_that_reads_the_channels():
    net = model("cnn", channels=[8, 16])
    pr.prune_channels(net, torch.randn(2, *SHAPE), 0.75)
    conv1, bn1, conv2, bn2 = net.features[0][0], net.features[0][1], net.features[1][0], net.features[1][1]
    assert (conv1.out_channels, bn1.num_features, conv2.in_channels) == (2, 2, 2)
    assert (conv2.out_channels, bn2.num_features, net.classifier.in_features) == (4, 4, 4)
    assert conv2.weight.shape == (4, 2, 3, 3) and net.classifier.weight.shape == (10, 4)
    assert net(torch.randn(3, *SHAPE)).shape == (3, 10)


def test_structured_pruning_leaves_residual_joins_and_the_classifier_alone():
    net = build_model(ModelConfig(name="resnet8"), (3, 16, 16), 10).eval()
    groups = pr.channel_groups(net, torch.randn(2, 3, 16, 16))
    assert groups and all(g.producer.endswith("conv1") and g.consumers[0][0].endswith("conv2") for g in groups)
    pr.prune_channels(net, torch.randn(2, 3, 16, 16), 0.5)
    assert net(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    with pytest.raises(DistilError, match="unstructured"):
        pr.prune_channels(nn.Sequential(nn.Flatten(), nn.Linear(64, 10)), torch.randn(2, *SHAPE), 0.5)


def test_unstructured_pruning_is_global_by_magnitude_and_permanent():
    net = model("mlp", hidden=[32])
    original = {n: p.detach().clone() for n, p in net.named_parameters() if n.endswith("weight")}
    pr.prune_magnitude(net, 0.6)
    pr.make_permanent(net)
    assert not any("_orig" in k or "_mask" in k for k in net.state_dict())
    assert pr.weight_sparsity(net) == pytest.approx(0.6, abs=1e-3)
    weights = dict(net.named_parameters())
    zeroed = torch.cat([original[n][weights[n] == 0].abs() for n in original])
    kept = torch.cat([original[n][weights[n] != 0].abs() for n in original])
    assert zeroed.max() <= kept.min()  # one global threshold over every layer


def test_dynamic_int8_mlp_matches_fp32_and_reloads_exactly(tmp_path):
    cfg = ModelConfig(name="mlp", hidden=[32])
    net = model("mlp", hidden=[32])
    assert q.resolve_mode("auto", net) == "dynamic"
    int8 = q.quantize(net, "dynamic", "x86", torch.randn(8, *SHAPE))
    assert sum(isinstance(m, torch.ao.nn.quantized.dynamic.Linear) for m in int8.modules()) == 2
    x = torch.randn(64, *SHAPE)
    assert (int8(x) - net(x)).abs().max() < 0.05 * net(x).abs().max()
    save_compressed(tmp_path / "int8.pt", int8, meta_of(cfg), quantized={"mode": "dynamic", "backend": "x86"})
    loaded, meta = load_any(tmp_path / "int8.pt")
    assert meta["quantized"]["mode"] == "dynamic"
    assert torch.equal(loaded(x), int8(x))


def test_static_int8_cnn_is_calibrated_and_reloads_exactly(tmp_path):
    cfg = ModelConfig(name="cnn", channels=[8, 16])
    net = model("cnn", channels=[8, 16])
    calibration = torch.randn(128, *SHAPE)
    assert q.resolve_mode("auto", net) == "static"
    pr_net = model("cnn", channels=[8, 16])
    widths = pr.prune_channels(pr_net, calibration[:2], 0.5)
    for source, kept in ((net, {}), (pr_net, widths)):
        int8 = q.quantize(source, "static", "x86", calibration)
        assert sum(isinstance(m, torch.ao.nn.quantized.Conv2d) for m in int8.modules()) == 2
        x = calibration[:32]
        agree = (int8(x).argmax(-1) == source(x).argmax(-1)).float().mean()
        assert agree >= 0.8
        save_compressed(tmp_path / "int8.pt", int8, meta_of(cfg), widths=kept,
                        quantized={"mode": "static", "backend": "x86"})
        loaded, _ = load_any(tmp_path / "int8.pt")
        assert torch.equal(loaded(x), int8(x))


def test_pruned_file_rebuilds_its_smaller_architecture(tmp_path):
    cfg = ModelConfig(name="cnn", channels=[8, 16])
    net = model("cnn", channels=[8, 16])
    widths = pr.prune_channels(net, torch.randn(2, *SHAPE), 0.5)
    save_compressed(tmp_path / "pruned.pt", net, meta_of(cfg), widths=widths)
    loaded, _ = load_any(tmp_path / "pruned.pt")
    x = torch.randn(4, *SHAPE)
    assert torch.equal(loaded(x), net(x))
    with pytest.raises(DistilError, match="not available"):
        q.use_backend("tpu")


def test_recipe_checks_the_compress_section(tmp_path, tiny_recipe):
    with pytest.raises(DistilError, match="compress.prune.amount"):
        load_recipe(tiny_recipe, ["compress.prune.amount=1.5"])
    with pytest.raises(DistilError, match=r"compress\.prune\.losses\.0\.name.*unknown loss 'kdd'"):
        load_recipe(tiny_recipe, ["compress.prune.losses=[{name: kdd}]"])
    with pytest.raises(DistilError, match="export.max_top1_change"):
        load_recipe(tiny_recipe, ["export.max_top1_change=2"])
    assert load_recipe(tiny_recipe).compress is None and load_recipe(tiny_recipe).serve.host == "127.0.0.1"


def test_run_prunes_recovers_quantizes_exports_and_writes_the_card(tiny_recipe, tmp_path, capsys):
    runs = tmp_path / "runs"
    args = ["run", tiny_recipe, "--runs-dir", runs, "-q", "--set", "student={name: cnn, channels: [8, 16]}",
            "--set", "compress={prune: {method: structured, amount: 0.5, recovery_epochs: 2}, quantize: {}}",
            "--set", "export={}", "--set", "distill.baseline=false"]
    code, _, err = run_cli(args, capsys)
    assert code == 0, err
    run_dir = runs / "tiny"
    for name in ["student-pruned.pt", "student-int8.pt", "student.onnx"]:
        assert (run_dir / "models" / name).is_file(), name
    results = json.loads((run_dir / "results.json").read_text())
    rows = results["models"]
    assert set(rows) == {"teacher", "student", "pruned", "int8", "onnx"}
    assert rows["pruned"]["params"] < rows["student"]["params"] and rows["int8"]["device"] == "cpu"
    assert rows["onnx"]["agreement_source"] == 1.0 and rows["onnx"]["top1"] == rows["pruned"]["top1"]
    prune_info = results["compress"]["prune"]
    assert prune_info["widths"] == {"features.0.0": 4, "features.1.0": 8}
    assert results["compress"]["quantize"]["mode"] == "static" and results["export"]["source"] == "pruned"
    assert results["export"]["max_abs_diff"] <= 1e-4 and results["export"]["top1_changed"] == 0
    epochs = [r["epoch"] for r in MetricsLog(run_dir / "metrics.jsonl").records() if r.get("stage") == "recover"]
    assert epochs == [1, 2]
    report = (run_dir / "report.md").read_text()
    assert "What compression and export bought" in report and "int8 static" in report and "ONNX Runtime" in report
    card = (run_dir / "MODEL_CARD.md").read_text()
    for heading in ["## Data", "## Teacher", "## Method", "## Metrics, size and latency", "## Intended use",
                    "## Limits", results["export"]["sha256"]]:
        assert heading in card, heading

    code, out, err = run_cli(["eval", run_dir / "models/student-int8.pt", "--data", "digits"], capsys)
    assert code == 0 and "student-int8.pt" in out, err
    code, _, err = run_cli(args + ["--resume"], capsys)  # every compressed model is loaded, nothing retrained
    assert code == 0, err
    again = json.loads((run_dir / "results.json").read_text())["models"]
    assert all(again[r]["top1"] == rows[r]["top1"] for r in rows)
