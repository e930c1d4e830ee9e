"""The loss registry and the spine's losses: ce, kd, mse_logits."""

import math

import pytest
import torch
import torch.nn.functional as F

import distil
from distil.methods import REGISTRY, build_objective, describe_methods
from distil.methods.base import Outputs
from distil.recipe import LossTerm


def test_kd_matches_a_hand_computation():
    s = torch.tensor([[1.0, 2.0, 0.5]])
    t = torch.tensor([[0.2, 3.0, -1.0]])
    temperature = 2.0
    p_t = [math.exp(v / temperature) for v in t[0].tolist()]
    p_t = [v / sum(p_t) for v in p_t]
    p_s = [math.exp(v / temperature) for v in s[0].tolist()]
    p_s = [v / sum(p_s) for v in p_s]
    expected = sum(pt * math.log(pt / ps) for pt, ps in zip(p_t, p_s)) * temperature**2
    kd = distil.KD(temperature=temperature)
    assert kd(Outputs(s), Outputs(t), torch.tensor([1])).item() == pytest.approx(expected, rel=1e-5)


def test_kd_is_zero_when_student_equals_teacher():
    logits = torch.randn(8, 5)
    assert distil.KD(temperature=3)(Outputs(logits), Outputs(logits.clone()), torch.zeros(8).long()).item() == \
        pytest.approx(0.0, abs=1e-6)


def test_kd_gradient_scale_follows_t_squared():
    # For large T, dKD/dz_s ~ (p_s - p_t) * T^2 / T ~ (z_s - z_t) / (K T) * T = (z_s - z_t)/K: the T^2 factor keeps the
    # gradient magnitude roughly constant across temperatures (Hinton et al. section 2.1).
    torch.manual_seed(0)
    s, t = torch.randn(16, 10), torch.randn(16, 10)
    norms = []
    for temperature in (4.0, 8.0, 16.0):
        z = s.clone().requires_grad_(True)
        distil.KD(temperature=temperature)(Outputs(z), Outputs(t), torch.zeros(16).long()).backward()
        norms.append(z.grad.norm().item())
    assert max(norms) / min(norms) < 1.3
    z = s.clone().requires_grad_(True)
    unscaled = F.kl_div(F.log_softmax(z / 16, -1), F.log_softmax(t / 16, -1), log_target=True, reduction="batchmean")
    unscaled.backward()
    assert z.grad.norm().item() * 256 == pytest.approx(norms[-1], rel=1e-4)


def test_ce_and_mse_logits():
    s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    assert distil.CE()(Outputs(s), None, y).item() == pytest.approx(F.cross_entropy(s, y).item())
    assert distil.MSELogits()(Outputs(s), Outputs(t), y).item() == pytest.approx(F.mse_loss(s, t).item())


def test_objective_is_the_weighted_sum_of_its_terms():
    s, t, y = torch.randn(4, 3), torch.randn(4, 3), torch.tensor([0, 1, 2, 1])
    objective = build_objective([LossTerm(name="ce", weight=0.3), LossTerm(name="kd", weight=0.7, temperature=2)])
    total, terms = objective(Outputs(s), Outputs(t), y)
    assert set(terms) == {"ce", "kd"}
    assert total.item() == pytest.approx(0.3 * terms["ce"].item() + 0.7 * terms["kd"].item(), rel=1e-6)
    assert objective.needs_teacher


def test_bad_parameters_name_the_field():
    with pytest.raises(distil.DistilError, match="temprature.*temperature"):
        distil.KD(temprature=4)
    with pytest.raises(distil.DistilError, match="temperature"):
        distil.KD(temperature=-1)


def test_registry_lists_every_method_with_paper_and_params():
    rows = {r["name"]: r for r in describe_methods()}
    assert {"ce", "kd", "mse_logits"} <= set(rows) == set(REGISTRY)
    assert rows["kd"]["params"]["temperature"]["default"] == 4.0
    assert "Hinton" in rows["kd"]["paper"]
