"""Every registered method through the engine and the recipe: taps, probe-built parameters, own stages, resume."""

import json

import pytest
import torch
from test_methods_feature import TAPS, resnet

import distil
from distil.data import IndexedTensorDataset
from distil.engine import Fit
from distil.methods import REGISTRY, Objective
from distil.methods.base import method_class
from distil.recipe import TrainConfig
from distil.runlog import MetricsLog
from distil.teachers import LiveTeacher

# need text models / LM targets, or a soft decision tree student (tested in test_explain.py)
MODEL_SPECIFIC = {"hidden_mse", "embedding_mse", "attention_mse", "attention_kl", "lm_ce", "soft_tree_kd"}
TRAIN = IndexedTensorDataset(torch.randn(16, 3, 8, 8, generator=torch.Generator().manual_seed(0)),
                             torch.arange(16) % 4)


def fit(objective: Objective, student, teacher, epochs: int = 1, **kwargs) -> Fit:
    return Fit(stage="distill", model=student, objective=objective, train=TRAIN, val=None,
               cfg=TrainConfig(epochs=epochs, batch_size=8, lr=0.01, scheduler="none"), device=torch.device("cpu"),
               teacher=LiveTeacher(teacher), quiet=True, **kwargs)


@pytest.mark.parametrize("name", sorted(set(REGISTRY) - MODEL_SPECIFIC))
def test_every_method_trains_two_steps_on_a_resnet_pair(name):
    student, teacher = resnet("resnet8"), resnet("resnet14", seed=1)
    before_s = [p.detach().clone() for p in student.parameters()]
    before_t = {k: v.clone() for k, v in teacher.state_dict().items()}
    method = method_class(name)(**TAPS.get(name, {}))
    result = fit(Objective([method]), student, teacher).run()
    record = result.history[-1]
    assert record[f"loss_{name}"] == record["loss"] and torch.isfinite(torch.tensor(record["loss"]))
    assert any(not torch.equal(a, b) for a, b in zip(before_s, student.parameters()))
    assert all(torch.equal(before_t[k], v) for k, v in teacher.state_dict().items())  # BatchNorm stats included
    assert all(len(m._forward_hooks) == 0 for m in [*student.modules(), *teacher.modules()])


def test_connectors_join_the_optimizer_and_resume_continues_exactly(tmp_path):
    def objective():
        return Objective([method_class("ce")(weight=0.1), method_class("fitnet")(student="layer2", teacher="layer3")])

    straight = objective()
    fit(straight, resnet("resnet8"), resnet("resnet14", seed=1), epochs=2).run()
    path = tmp_path / "distill.ckpt"
    first = objective()
    fit(first, resnet("resnet8"), resnet("resnet14", seed=1), epochs=1, checkpoint_path=path).run()
    resumed_objective = objective()
    student = resnet("resnet8")
    result = fit(resumed_objective, student, resnet("resnet14", seed=1), epochs=2, checkpoint_path=path).run(
        resume=True)
    assert len(result.history) == 2
    regressor = straight.methods[1].regressors[0].conv.weight
    assert not torch.equal(regressor, first.methods[1].regressors[0].conv.weight)  # it trained
    assert torch.allclose(regressor, resumed_objective.methods[1].regressors[0].conv.weight, atol=1e-6)
    assert "methods.1.regressors.0.conv.weight" in torch.load(path, weights_only=False)["objective"]


@pytest.mark.parametrize("name", ["ab", "ft"])
def test_a_methods_own_stage_runs_first_and_is_logged_apart(name, tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    student = resnet("resnet8")
    before = [p.detach().clone() for p in student.parameters()]
    method = method_class(name)(**{**TAPS[name], "init_epochs": 2}, weight=0.0)
    run = fit(Objective([method_class("ce")(), method]), student, resnet("resnet14", seed=1), log=log)
    run.run()
    stages = [(r["stage"], r["epoch"]) for r in log.records() if "epoch" in r]
    assert stages == [(f"distill:{name}", 1), (f"distill:{name}", 2), ("distill", 1)]
    if name == "ft":
        assert all(not p.requires_grad for p in method.encoder.parameters())  # frozen again after its stage
    assert any(not torch.equal(a, b) for a, b in zip(before, student.parameters()))


RECIPE = """\
name: fitnet
seed: 0
data: {name: synthetic, synthetic: {num_samples: 80, num_classes: 3, shape: [3, 8, 8]}}
teacher: {name: resnet8, epochs: 1}
student: {name: resnet8}
distill:
  baseline: false
  losses:
    - {name: ce, weight: 1}
    - {name: fitnet, weight: 10, student: layer2, teacher: layer3}
train: {epochs: 2, batch_size: 32, lr: 0.01}
eval: {latency_repeats: 3, throughput_batch: 8}
"""


def test_fitnet_recipe_runs_end_to_end_with_a_live_teacher_and_with_a_cache(tmp_path):
    path = tmp_path / "fitnet.yaml"
    path.write_text(RECIPE)
    live = distil.run(str(path), runs_dir=str(tmp_path / "runs"))
    assert live.results["models"]["student"]["top1"] >= 0
    records = MetricsLog(live.run_dir / "metrics.jsonl").records()
    assert [r["loss_fitnet"] > 0 for r in records if r["stage"] == "distill"] == [True, True]
    model, _ = distil.load(str(live.run_dir / "models" / "student.pt"))  # the student only, no connector
    assert not any("regressor" in k for k in model.state_dict())
    cached = distil.run(str(path), runs_dir=str(tmp_path / "runs"), overrides=["name=cached", "cache.dtype=fp32"])
    manifest = json.loads((cached.run_dir / "cache" / "manifest.json").read_text())
    assert [m["tap"] for m in manifest["arrays"].values() if "tap" in m] == ["layer3"]
    with pytest.raises(distil.DistilError, match=r"has no module 'layer9'.*did you mean"):
        distil.run(str(path), runs_dir=str(tmp_path / "runs"),
                   overrides=["name=bad", "distill.losses.1.teacher=layer9"])
