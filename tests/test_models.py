"""The model zoo: every model builds on small and CIFAR-sized inputs, names and errors are helpful."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from distil.errors import DistilError
from distil.models import available_models, build_model, describe_models
from distil.recipe import ModelConfig

ZOO = available_models()
CONV_ZOO = [name for name in ZOO if name not in {"mlp", "cnn"}]


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(name: str, shape: tuple[int, ...] = (3, 32, 32), classes: int = 10, **fields) -> nn.Module:
    return build_model(ModelConfig(name=name, **fields), shape, classes)


@pytest.mark.parametrize("shape,classes", [((1, 8, 8), 10), ((3, 32, 32), 100)])
@pytest.mark.parametrize("name", ZOO)
def test_every_zoo_model_builds_runs_and_backpropagates(name: str, shape: tuple[int, ...], classes: int) -> None:
    torch.manual_seed(0)
    model = build(name, shape, classes)
    logits = model(torch.randn(2, *shape))
    assert logits.shape == (2, classes)
    logits.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_available_models_is_sorted_and_described() -> None:
    assert ZOO == sorted(ZOO)
    expected = {"mlp", "cnn", "resnet8", "resnet20", "resnet56", "resnet110", "resnet8x4", "resnet32x4"}
    assert expected | {"wrn_16_2", "wrn_40_2", "mobilenetv2", "shufflenetv2"} <= set(ZOO)
    assert list(describe_models()) == ZOO and all(describe_models().values())


def test_parameter_counts_follow_the_literature() -> None:
    counts = {name: n_params(build(name, classes=100)) for name in ("resnet8", "resnet20", "resnet56", "resnet8x4")}
    counts |= {name: n_params(build(name, classes=100)) for name in ("wrn_16_2", "wrn_40_2")}
    assert counts["resnet8"] < counts["resnet20"] < counts["resnet56"]
    assert counts["resnet8"] < counts["resnet8x4"]
    assert counts["wrn_16_2"] < counts["wrn_40_2"]
    assert abs(counts["resnet20"] - 0.27e6) / 0.27e6 < 0.05
    assert abs(counts["wrn_40_2"] - 2.25e6) / 2.25e6 < 0.05


def test_module_paths_are_readable_for_taps() -> None:
    names = dict(build("resnet20").named_modules())
    assert {"conv1", "bn1", "layer1", "layer2.0.downsample", "layer3.2.conv2", "layer3.2.relu2", "fc"} <= set(names)
    assert {"conv1", "layer3.1.conv2", "bn1", "fc"} <= set(dict(build("wrn_16_2").named_modules()))
    assert {"layer7.0.project", "conv2", "fc"} <= set(dict(build("mobilenetv2").named_modules()))
    assert {"layer3.0.branch2", "layer3.3.branch", "conv2", "fc"} <= set(dict(build("shufflenetv2").named_modules()))
    assert {"features.0", "features.1", "classifier"} <= set(dict(build("mlp", (64,)).named_modules()))
    assert {"features.0.0", "features.1", "classifier"} <= set(dict(build("cnn", (1, 8, 8)).named_modules()))


def test_mlp_uses_hidden_and_dropout() -> None:
    model = build("mlp", (4, 5), 3, hidden=[32, 16], dropout=0.25)
    assert [m.out_features for m in model.modules() if isinstance(m, nn.Linear)] == [32, 16, 3]
    assert all(m.p == 0.25 for m in model.modules() if isinstance(m, nn.Dropout))
    assert build("mlp", (40,), 3).features[0][0].out_features == 256  # default [256, 256]
    assert build("mlp", (40,), 3, hidden=[]).classifier.in_features == 40


@pytest.mark.parametrize("shape", [(40,), (1, 40), (3, 40)])
@pytest.mark.parametrize("name", ["mlp", "cnn"])
def test_mlp_and_cnn_take_one_dimensional_inputs(name: str, shape: tuple[int, ...]) -> None:
    model = build(name, shape, 5, channels=[8, 16, 16] if name == "cnn" else None)
    assert model(torch.randn(2, *shape)).shape == (2, 5)


def test_cnn_picks_conv1d_or_conv2d_and_uses_channels() -> None:
    signal, image = build("cnn", (2, 40), 3), build("cnn", (1, 28, 28), 3, channels=[4, 8, 8], dropout=0.1)
    assert any(isinstance(m, nn.Conv1d) for m in signal.modules())
    assert [m.out_channels for m in image.modules() if isinstance(m, nn.Conv2d)] == [4, 8, 8]
    assert image.dropout.p == 0.1
    with pytest.raises(DistilError, match="channels"):
        build("cnn", (1, 8, 8), channels=[])
    with pytest.raises(DistilError, match=r"\(L,\), \(C, L\) or \(C, H, W\)"):
        build("cnn", (1, 2, 8, 8))


@pytest.mark.parametrize("name", CONV_ZOO)
def test_conv_zoo_refuses_one_dimensional_inputs(name: str) -> None:
    with pytest.raises(DistilError) as err:
        build(name, (40,))
    assert str(err.value) == (
        f"model '{name}' needs image inputs shaped (C, H, W), got (40,); use mlp or cnn for this data."
    )


@pytest.mark.parametrize("name", ["cnn", "resnet8", "wrn_16_1", "mobilenetv2", "shufflenetv2"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 1, 40), (1, 3, 5)])
def test_conv_models_never_shrink_to_nothing(name: str, shape: tuple[int, ...]) -> None:
    assert build(name, shape, 4)(torch.randn(2, *shape)).shape == (2, 4)


def test_zoo_heads_take_dropout_and_standard_init() -> None:
    model = build("resnet8", dropout=0.3)
    assert model.dropout.p == 0.3
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.all(m.weight == 1) and torch.all(m.bias == 0) for m in norms)
    conv = model.layer3[0].conv2  # Kaiming fan-out: std = sqrt(2 / (out_ch * 3 * 3))
    assert abs(conv.weight.std().item() - (2 / (64 * 9)) ** 0.5) < 0.01


def test_same_seed_gives_same_model() -> None:
    torch.manual_seed(3)
    first = build("shufflenetv2", (1, 8, 8)).state_dict()
    torch.manual_seed(3)
    second = build("shufflenetv2", (1, 8, 8)).state_dict()
    assert all(torch.equal(first[key], second[key]) for key in first)


def test_wide_resnet_names_are_parsed() -> None:
    assert isinstance(build("wrn_22_1", (1, 8, 8)), nn.Module)
    assert n_params(build("wrn_16_4")) > n_params(build("wrn_16_2"))
    with pytest.raises(DistilError, match="6n\\+4"):
        build("wrn_15_2")


def test_names_are_case_insensitive_and_unknown_names_get_suggestions() -> None:
    assert isinstance(build("ResNet8"), nn.Module)
    with pytest.raises(DistilError, match=r"unknown model 'resnet9' \(did you mean resnet8.*\?\); see `distil models`"):
        build("resnet9")


def test_checkpoint_names_are_not_built_here() -> None:
    with pytest.raises(DistilError, match="distil.checkpoint"):
        build("checkpoint:runs/x/teacher.pt")


def test_bad_sizes_are_refused() -> None:
    with pytest.raises(DistilError, match="hidden"):
        build("mlp", (8,), hidden=[0])
    with pytest.raises(DistilError, match="num_classes"):
        build("mlp", (8,), 0)
    with pytest.raises(DistilError, match="input shape"):
        build("mlp", (0, 8))


@pytest.fixture
def user_models_on_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(Path(__file__).parent))


@pytest.mark.usefixtures("user_models_on_path")
def test_python_factory_gets_shape_and_classes() -> None:
    model = build("python:user_models:make_model", (2, 3, 4), 7)
    assert model(torch.randn(5, 2, 3, 4)).shape == (5, 7)


@pytest.mark.usefixtures("user_models_on_path")
def test_python_factory_without_arguments_is_called_bare() -> None:
    assert build("python:user_models:make_fixed", (1, 8, 8), 10)(torch.randn(2, 1, 8, 8)).shape == (2, 10)


@pytest.mark.usefixtures("user_models_on_path")
def test_python_factory_must_return_a_module() -> None:
    with pytest.raises(DistilError, match="returned dict, not a torch.nn.Module"):
        build("python:user_models:make_config")
    with pytest.raises(DistilError, match="no callable 'make_modl' \\(did you mean make_model"):
        build("python:user_models:make_modl")


@pytest.mark.parametrize(
    "spec,match",
    [
        ("python:no_such_pkg.models:build", "cannot import module 'no_such_pkg.models'.*PYTHONPATH"),
        ("python:user_models", "python:package.module:factory"),
    ],
)
def test_bad_python_specs_say_what_to_fix(spec: str, match: str) -> None:
    with pytest.raises(DistilError, match=match):
        build(spec)


@pytest.mark.parametrize("name,shape", [("cnn", (40,)), ("shufflenetv2", (1, 8, 8))])
def test_models_export_without_data_dependent_control_flow(name: str, shape: tuple[int, ...]) -> None:
    model = build(name, shape, 3).eval()
    x = torch.randn(2, *shape)
    exported = torch.export.export(model, (x,))
    assert torch.allclose(exported.module()(x), model(x), atol=1e-5)
