"""What the engine measures before training: `lr: auto` (range test) and `weight: auto` (gradient balance); and the
scale-free losses that make a weight mean the same on any batch size (MLKD) and CTKD's lambda under AdamW."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distil import calibrate
from distil.data import IndexedTensorDataset
from distil.engine import Fit
from distil.methods import Objective, build_objective
from distil.methods.base import Outputs
from distil.methods.logits import CE, CTKD, KD, MLKD
from distil.recipe import LossTerm, TrainConfig, dump_recipe, load_recipe
from distil.teachers import LiveTeacher

pytestmark = pytest.mark.usefixtures("one_thread")


def blobs(n: int = 512, seed: int = 0) -> IndexedTensorDataset:
    """Four Gaussian blobs in 8 dimensions, a little overlapping."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 4
    centers = torch.randn(4, 8, generator=g) * 1.5
    return IndexedTensorDataset(centers[y] + torch.randn(n, 8, generator=g), y)


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))


def fit(model: nn.Module, objective: Objective, lr, teacher: nn.Module | None = None, epochs: int = 2,
        optimizer: str = "sgd", data: IndexedTensorDataset | None = None) -> Fit:
    cfg = TrainConfig(epochs=epochs, batch_size=32, lr=lr, optimizer=optimizer, momentum=0.0)
    return Fit(stage="distill", model=model, objective=objective, train=data or blobs(), val=None, cfg=cfg,
               device=torch.device("cpu"), teacher=LiveTeacher(teacher) if teacher is not None else None, quiet=True)


def train_loss(lr: float) -> float:
    history = fit(mlp(), Objective([CE()]), lr).run().history
    return history[-1]["loss"]


def test_range_test_picks_an_lr_within_3x_of_the_best_of_a_grid():
    grid = [10.0 ** (k / 2) for k in range(-6, 2)]  # 1e-3 ... 3.16
    losses = {lr: train_loss(lr) for lr in grid}
    best = min(losses, key=losses.get)
    result = fit(mlp(), Objective([CE()]), "auto").run()
    assert result.lr_find is not None and len(result.lr_find.lrs) == len(result.lr_find.losses) > 10
    assert best / 3 <= result.lr <= best * 3, (result.lr, losses)
    assert result.history[0]["lr"] <= result.lr  # training used it


def test_range_test_leaves_the_model_where_it_was_and_training_is_deterministic():
    model = mlp()
    before = copy.deepcopy(model.state_dict())
    f = fit(model, Objective([CE()]), "auto", epochs=1)
    f._prepare_objective(model, f.objective)
    f._calibrate(model, f.objective)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    a = fit(mlp(), Objective([CE()]), "auto").run()
    b = fit(mlp(), Objective([CE()]), "auto").run()
    assert a.lr == b.lr and a.history[-1]["loss"] == b.history[-1]["loss"]


def test_pick_lr_is_a_tenth_of_the_minimum():
    assert calibrate.pick_lr([1e-3, 1e-2, 1e-1, 1.0], [3.0, 2.0, 1.0, 5.0]) == pytest.approx(1e-2)


def test_pick_lr_stays_before_a_bump_when_the_minimum_lies_past_it():
    # the loss falls, turns up at 1e-2, then falls lower at rates already unstable: a tenth of 0.1 would be 1e-2
    lrs, losses = [1e-4, 1e-3, 1e-2, 1e-1, 1.0], [3.0, 1.5, 1.9, 1.2, 4.0]
    assert calibrate.pick_lr(lrs, losses) == pytest.approx(1e-3)


def test_pick_lr_ignores_the_middle_of_a_curve_that_barely_falls():
    # a 10% fall on a noisy plateau: the half-way level is crossed by noise at 1e-5, so the tenth of the minimum's lr
    lrs, losses = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1], [4.3, 4.1, 4.2, 4.0, 3.9, 4.5]
    assert calibrate.pick_lr(lrs, losses) == pytest.approx(1e-3)


def test_lr_auto_is_the_default_and_is_recorded_in_the_resolved_recipe(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("train: {epochs: 1}\n")
    recipe = load_recipe(path)
    assert recipe.train.lr == "auto" and "lr: auto" in dump_recipe(recipe)
    assert load_recipe(path, ["train.lr=0.01"]).train.lr == 0.01
    term = recipe.distill.losses[1]
    assert (term.name, term.weight, recipe.distill.losses[0].weight) == ("kd", 0.5, 0.5)


def test_a_run_records_the_chosen_lr_and_plots_the_range_test(tmp_path, tiny_recipe):
    import distil

    result = distil.run(str(tiny_recipe), overrides=["train.epochs=1", "train.lr=auto"], runs_dir=str(tmp_path))
    records = [r for r in (result.run_dir / "metrics.jsonl").read_text().splitlines() if "lr_find" in r]
    assert len(records) == 3  # teach, distill, alone
    assert (result.run_dir / "lr_find.png").is_file()
    report = (result.run_dir / "report.md").read_text()
    assert "range test" in report and "lr_find.png" in report


def grad_norm(value: torch.Tensor, model: nn.Module) -> float:
    grads = torch.autograd.grad(value, list(model.parameters()), retain_graph=True)
    return float(torch.stack([g.norm() for g in grads]).norm())


@pytest.mark.parametrize("ratio", [1.0, 0.25])
def test_weight_auto_sets_the_initial_gradient_ratio(ratio):
    teacher = mlp(seed=5)
    terms = [LossTerm(name="ce", weight=0.5), LossTerm(name="mse_logits", weight="auto", ratio=ratio)]
    objective = build_objective(terms)
    model = mlp()
    f = fit(model, objective, 0.1, teacher=teacher)
    f._prepare_objective(model, objective)
    f._calibrate(model, objective)
    assert f._balance.weights["mse_logits"] == objective.methods[1].weight != 1.0
    data = blobs()
    x, y = data.x[:128], data.y[:128]  # other batches than the ones measured: within 20%
    out, t = Outputs(model(x)), Outputs(teacher(x).detach())
    label = grad_norm(0.5 * objective.methods[0](out, t, y), model)
    term = grad_norm(objective.methods[1].weight * objective.methods[1](out, t, y), model)
    assert term / label == pytest.approx(ratio, rel=0.2)


def test_feature_terms_default_to_weight_auto():
    from distil.methods import validate_terms

    terms = [LossTerm(name="ce"), LossTerm(name="at", student="a", teacher="b"), LossTerm(name="kd")]
    validate_terms(terms)
    assert [t.weight for t in terms] == [1.0, "auto", 1.0]
    with pytest.raises(Exception, match="ratio"):
        validate_terms([LossTerm(name="kd", weight=1.0, ratio=2.0)])


def test_mlkd_keeps_its_size_across_batch_sizes():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(256, 10, generator=g) * 2, torch.randn(256, 10, generator=g) * 2
    y = torch.zeros(256, dtype=torch.long)
    small = MLKD()(Outputs(s[:64]), Outputs(t[:64]), y[:64]).item()
    large = MLKD()(Outputs(s), Outputs(t), y).item()
    assert large == pytest.approx(small, rel=0.1)


def learned_temperature(lambda_max: float) -> float:
    teacher = mlp(seed=5)
    objective = Objective([CE(weight=0.5), CTKD(weight=0.5, lambda_max=lambda_max, warmup=0.1)])
    fit(mlp(), objective, 0.01, teacher=teacher, epochs=3, optimizer="adamw").run()
    return float(objective.methods[1].temperature)


def test_ctkd_lambda_moves_the_temperature_under_adamw():
    weak, strong = learned_temperature(0.1), learned_temperature(10.0)
    start = float(CTKD().temperature)
    assert abs(strong - start) > 3 * abs(weak - start) > 0


def test_teacher_tensors_are_detached_in_the_objective():
    t = torch.randn(4, 3, requires_grad=True)
    s = torch.randn(4, 3, requires_grad=True)
    total, _ = Objective([KD()])(Outputs(s), Outputs(t), torch.zeros(4, dtype=torch.long))
    total.backward()
    assert t.grad is None and s.grad is not None
    assert F.mse_loss(s, t).requires_grad  # (the guard is the objective's, not autograd's)


def test_weight_auto_measures_a_warming_up_term_at_full_strength():
    teacher = mlp(seed=5)
    objective = build_objective([LossTerm(name="ce"), LossTerm(name="dkd", weight="auto", warmup=0.5)])
    model = mlp()
    f = fit(model, objective, 0.1, teacher=teacher)
    f._prepare_objective(model, objective)
    f._calibrate(model, objective)
    assert f._balance.norms["dkd"] > 0 and objective.methods[1].weight != 1.0
    assert objective.methods[1].ramp() == 0.0  # training still starts at the warm-up's beginning
