"""distil.guards: each guard fires on a run built for it, in the log, results.json and report.md, and stays silent
on a run that is set up well; BatchNorm students evaluate as well as they train."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

import distil
from distil import guards
from distil.context import Trainer
from distil.data import load_dataset
from distil.engine import Fit, predict, targets_of
from distil.models import build_model
from distil.models.batchnorm import batchnorm_layers, recalibrate
from distil.pipeline import run_recipe
from distil.recipe import DataConfig, LossTerm, ModelConfig, TrainConfig, load_recipe
from distil.strategies.schedules import scheduled_objective

pytestmark = pytest.mark.usefixtures("one_thread")

RECIPE = """\
name: {name}
seed: 0
data: {{name: digits, limit: 400}}
teacher: {teacher}
student: {student}
distill:
  losses: {losses}
train: {{epochs: {epochs}, batch_size: 32, lr: 0.01}}
eval: {{latency_repeats: 3, throughput_batch: 8}}
"""


def run(tmp_path, name="guarded", teacher="{name: mlp, hidden: [64], epochs: 8}", student="{name: mlp, hidden: [16]}",
        losses="[{name: ce, weight: 0.5}, {name: kd, weight: 0.5, temperature: 4}]", epochs=12) -> dict:
    path = tmp_path / f"{name}.yaml"
    path.write_text(RECIPE.format(name=name, teacher=teacher, student=student, losses=losses, epochs=epochs))
    result = distil.run(str(path), runs_dir=str(tmp_path / "runs"), quiet=True)
    report = (result.run_dir / "report.md").read_text()
    saved = json.loads((result.run_dir / "results.json").read_text())
    for warning in saved.get("warnings", []):
        assert warning in report  # every warning reaches the report
    return saved


def test_a_well_set_run_is_silent(tmp_path):
    results = run(tmp_path)
    assert "warnings" not in results


def test_a_large_student_a_weak_teacher_and_a_swamping_term_are_named(tmp_path, caplog):
    results = run(tmp_path, teacher="{name: mlp, hidden: [4], epochs: 1}", student="{name: mlp, hidden: [64]}",
                  losses="[{name: ce, weight: 0.01}, {name: kd, weight: 5, temperature: 4}]", epochs=3)
    said = "\n".join(results["warnings"])
    assert "more than its teacher's" in said
    assert "is below the student trained alone" in said  # the 4-unit teacher after one epoch
    assert "'kd' dominates the gradient" in said
    assert "likely cause: capacity" in said or "below the same student" not in said
    assert any("more than its teacher's" in r.getMessage() for r in caplog.records)  # said in the log too


def test_larger_student_and_teacher_checks_on_their_own():
    assert guards.larger_student(1000, 500) is None
    assert "2,000 parameters" in guards.larger_student(1000, 2000)
    target = torch.arange(100) % 4  # four balanced classes
    one_class = torch.zeros(100, dtype=torch.long)
    said = guards.teacher_checks({"top1": 0.25, "f1": 0.1}, one_class, target)
    assert len(said) == 2 and "macro-F1" in said[0] and "one class" in said[1]
    assert guards.teacher_checks({"top1": 0.9, "f1": 0.89}, target, target) == []


def test_dominant_term_reads_the_measured_gradients():
    records = [{"stage": "distill:grad_norms", "weighted": {"ce": 0.1, "kd": 0.6}}]
    assert guards.dominant_term(records) is None
    records = [{"stage": "distill:grad_norms", "weighted": {"kd": 0.2, "attention_kl": 3.25}}]
    assert "'attention_kl' dominates" in guards.dominant_term(records)


def test_dominance_the_weights_ask_for_is_not_warned_about():
    hinton = {"stage": "distill:grad_norms", "weighted": {"ce": 0.05, "kd": 0.55}, "weights": {"ce": 0.1, "kd": 0.9}}
    assert guards.dominant_term([hinton]) is None  # 11x, as 0.9 / 0.1 asks (1.2x per unit of weight)
    copied = {"stage": "distill:grad_norms", "weighted": {"ce": 0.1, "at": 15.0}, "weights": {"ce": 1.0, "at": 1000.0}}
    assert "'at' dominates the gradient of distill: 150x" in guards.dominant_term([copied])
    equal = {"stage": "distill:grad_norms", "weighted": {"ce": 0.05, "kd": 0.55}, "weights": {"ce": 1.0, "kd": 1.0}}
    assert "'kd' dominates" in guards.dominant_term([equal])
    asked = {"stage": "distill:grad_norms", "weighted": {"ce": 0.01, "kd": 5.0}, "weights": {"ce": 0.01, "kd": 5.0}}
    assert "'kd' dominates" in guards.dominant_term([asked])  # weights that themselves ask for 500x are named


def test_below_alone_needs_more_than_test_noise_and_names_the_cause():
    target = torch.arange(200) % 4
    results = {"models": {"student": {"top1": 0.7}, "alone": {"top1": 0.9}}}
    alone = target.clone()
    student = target.clone()
    student[:40] = (student[:40] + 1) % 4  # 40 samples lost, none won
    said = guards.below_alone(results, ["scale (one loss term swamps the others)"], {"student": student,
                                                                                     "alone": alone}, target)
    assert "likely cause: scale" in said and "40 test samples lost, 0 won" in said
    student, alone = target.clone(), target.clone()
    student[:6] = (student[:6] + 1) % 4  # 6 lost ...
    alone[6:10] = (alone[6:10] + 1) % 4  # ... 4 won: noise
    assert guards.below_alone(results, [], {"student": student, "alone": alone}, target) is None


def test_feature_terms_carrying_the_gradient_are_named_as_a_cause():
    records = [{"stage": "distill:grad_norms", "weighted": {"kd": 0.06, "hidden_mse": 0.095, "attention_kl": 0.13}}]
    assert "attention_kl, hidden_mse" in guards.feature_share(records)
    records = [{"stage": "distill:grad_norms", "weighted": {"ce": 0.07, "kd": 0.6, "kd_1": 0.2}}]
    assert guards.feature_share(records) is None


def test_chance_on_test_with_high_training_accuracy_is_named():
    results = {"models": {"student": {"top1": 0.26}, "alone": {"top1": 0.8}}}
    said = guards.chance_checks(results, {"distill": 0.9, "alone": 0.85}, torch.arange(100) % 4)
    assert len(said) == 1 and "at chance on test" in said[0] and "distilled student" in said[0]


def images(limit: int = 600):
    """Digits as (1, 8, 8) images: BatchNorm conv students train on them in seconds."""
    splits = load_dataset(DataConfig(name="digits", limit=limit), seed=0)
    for part in (splits.train, splits.val, splits.test):
        part.x = part.x.reshape(-1, 1, 8, 8)
    splits.input_shape = (1, 8, 8)
    return splits


def accuracy(model: nn.Module, data) -> float:
    return float((predict(model, data, torch.device("cpu")).argmax(-1) == targets_of(data)).float().mean())


@pytest.mark.parametrize("name", ["mobilenetv2", "resnet8"])
def test_a_batchnorm_student_evaluates_as_well_as_it_trains(name):
    splits = images()
    cfg = TrainConfig(epochs=4, batch_size=32, lr=0.02, scheduler="none")  # a fast-moving model at the end
    trainer = Trainer.standalone(cfg, device="cpu")
    model = trainer.fit("alone", lambda: build_model(ModelConfig(name=name), splits.input_shape, 10),
                        scheduled_objective([LossTerm(name="ce")]), splits.train)
    trained = trainer.histories["alone"][-1]["train_acc"]
    assert trained > 0.5
    assert accuracy(model, splits.train) >= trained - 0.05


def test_recalibrate_restores_statistics_that_describe_other_weights():
    splits = images(400)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet8"), splits.input_shape, 10)
    fit = Fit(stage="s", model=model, objective=scheduled_objective([LossTerm(name="ce")]), train=splits.train,
              val=None, cfg=TrainConfig(epochs=3, batch_size=32, lr=0.01), device=torch.device("cpu"), quiet=True)
    model = fit.run().model
    good = accuracy(model, splits.train)
    for layer in batchnorm_layers(model):  # statistics of weights long gone
        layer.running_mean.add_(3.0)
        layer.running_var.mul_(50.0)
    assert accuracy(model, splits.train) < good - 0.2
    assert recalibrate(model, splits.train, torch.device("cpu"), batch_size=32) == len(splits.train)
    assert accuracy(model, splits.train) >= good - 0.03
    assert not model.training


def test_validation_judges_batchnorm_by_fresh_statistics_and_leaves_training_as_it_was():
    splits = images(400)

    def fit(val):
        torch.manual_seed(0)
        model = build_model(ModelConfig(name="resnet8"), splits.input_shape, 10)
        for layer in batchnorm_layers(model):
            layer.momentum = 1e-4  # running averages that stay at their initial values: statistics of no weights
        result = Fit(stage="s", model=model, objective=scheduled_objective([LossTerm(name="ce")]), train=splits.train,
                     val=val, cfg=TrainConfig(epochs=3, batch_size=32, lr=0.01), device=torch.device("cpu"),
                     quiet=True).run()
        return result.model, result.history

    validated, history = fit(splits.val)
    plain, _ = fit(None)
    assert history[-1]["val_acc"] >= accuracy(validated, splits.val) - 0.05  # what the recalibrated model scores
    assert accuracy(validated, splits.val) > 0.5
    for (name, a), b in zip(validated.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), name  # validating changed nothing in training, running averages included


def test_a_run_whose_statistics_went_stale_is_recalibrated_and_says_so(tmp_path, monkeypatch):
    from distil import engine

    def stale(self, model):  # the engine's own recalibration replaced by statistics of other weights
        for layer in batchnorm_layers(model):
            layer.running_mean.add_(3.0)
            layer.running_var.mul_(50.0)

    monkeypatch.setattr(engine.Fit, "_recalibrate_batchnorm", stale)
    path = tmp_path / "bn.yaml"
    path.write_text(RECIPE.format(name="bn", teacher="{name: mlp, hidden: [64], epochs: 4}",
                                  student="{name: cnn, channels: [8, 16]}",
                                  losses="[{name: ce, weight: 0.5}, {name: kd, weight: 0.5, temperature: 4}]",
                                  epochs=4))
    recipe = load_recipe(path)
    result = run_recipe(recipe, tmp_path / "runs", quiet=True)
    said = "\n".join(result.results["warnings"])
    assert "BatchNorm running statistics did not describe its final weights" in said
    assert "distilled student" in said and "trained alone" in said
    assert result.results["models"]["student"]["top1"] > 0.5
    assert "recomputed" in (result.run_dir / "report.md").read_text()
