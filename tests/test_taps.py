"""Feature taps: module paths, inputs and outputs, hooks that exist only while needed, and clear errors."""

import pytest
import torch
from torch import nn

from distil.batch import Batch
from distil.data import IndexedTensorDataset
from distil.engine import Fit
from distil.errors import DistilError
from distil.methods import CE, KD, Objective
from distil.methods.feature import FitNet
from distil.models import build_model
from distil.recipe import ModelConfig, TrainConfig
from distil.taps import Taps, split_tap
from distil.teachers import LiveTeacher


def resnet(name: str = "resnet8") -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelConfig(name=name), (3, 8, 8), 4)


def hooks(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) for m in model.modules())


def test_taps_capture_outputs_inputs_the_model_output_and_the_embedding():
    model = resnet().eval()
    x = torch.randn(2, 3, 8, 8)
    taps = Taps(model, ["layer2", "layer3.0.relu2:input", ".", ".:input", "@embedding"])
    with taps:
        assert hooks(model) == 5
        logits = model(x)
    assert hooks(model) == 0
    f = taps.pop()
    assert f["layer2"].shape == (2, 32, 4, 4)
    block = model.layer3[0]
    h = model.layer2(model.layer1(model.relu(model.bn1(model.conv1(x)))))
    pre_relu = block.bn2(block.conv2(block.relu1(block.bn1(block.conv1(h))))) + block.downsample(h)
    assert torch.allclose(f["layer3.0.relu2:input"], pre_relu, atol=1e-5)
    assert torch.equal(f["."], logits) and torch.equal(f[".:input"], x)
    assert f["@embedding"].shape == (2, 64)  # what the classifier `fc` reads
    assert torch.allclose(model.fc(f["@embedding"]), logits, atol=1e-5)
    assert split_tap("a.b:input") == ("a.b", True)
    with pytest.raises(DistilError, match="did not run"):
        taps.pop()  # popped already: nothing captured since


def test_a_wrong_path_fails_at_once_with_the_nearest_names():
    with pytest.raises(DistilError, match=r"no module 'layer4'.*did you mean .*layer[123]"):
        Taps(resnet(), ["layer4"], role="student")
    with pytest.raises(DistilError, match=r"'layer3\.0\.conv3' \(did you mean layer3\.0\.conv2, layer3\.0\.conv1"):
        Taps(resnet(), ["layer3.0.conv3"])
    with pytest.raises(DistilError, match="last Linear layer, but the model has none"):
        Taps(nn.Sequential(nn.Conv2d(3, 4, 3)), ["@embedding"])


def test_a_wrong_path_in_a_loss_fails_before_any_training_step():
    train = IndexedTensorDataset(torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,)))
    student = resnet()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    fit = Fit(stage="distill", model=student, objective=Objective([FitNet(student="layer2", teacher="layer5")]),
              train=train, val=None, cfg=TrainConfig(epochs=1, batch_size=4), device=torch.device("cpu"),
              teacher=LiveTeacher(resnet("resnet14")), quiet=True)
    with pytest.raises(DistilError, match=r"teacher has no module 'layer5'.*did you mean"):
        fit.run()
    assert all(torch.equal(before[k], v) for k, v in student.state_dict().items())


def test_live_teacher_features_are_plain_tensors_keyed_by_path():
    teacher = LiveTeacher(resnet(), taps=["layer3"])
    x = torch.randn(2, 3, 8, 8)
    out = teacher.outputs(Batch(torch.arange(2), x, torch.zeros(2).long()))
    assert set(out.features) == {"layer3"} and not out.features["layer3"].requires_grad
    assert not out.features["layer3"].is_inference() and hooks(teacher.model) == 0
    teacher.tap(["layer1"])
    assert set(teacher.outputs(Batch(torch.arange(2), x, torch.zeros(2).long())).features) == {"layer1", "layer3"}


def test_no_taps_means_no_hooks_and_no_probe(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("no Taps may be built when no loss taps a feature")

    monkeypatch.setattr("distil.engine.Taps", fail)
    monkeypatch.setattr("distil.teachers.Taps", fail)
    objective = Objective([CE(weight=0.5), KD(weight=0.5)])
    assert not objective.needs_probe
    train = IndexedTensorDataset(torch.randn(8, 3, 8, 8), torch.randint(0, 4, (8,)))
    seen = []
    student = resnet()
    student.register_forward_pre_hook(lambda m, a: seen.append(hooks(m)))
    Fit(stage="distill", model=student, objective=objective, train=train, val=None, cfg=TrainConfig(epochs=1,
        batch_size=4, lr=0.01), device=torch.device("cpu"), teacher=LiveTeacher(resnet("resnet14")), quiet=True).run()
    assert len(seen) >= 2 and set(seen) == {0}  # training steps, calibration, BatchNorm statistics: no hooks
