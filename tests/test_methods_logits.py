"""Logit methods: DKD, DIST, LS-KD, MLKD, CTKD and NKD against hand computations and their papers' properties."""

import math

import pytest
import torch
import torch.nn.functional as F

from distil.methods.base import Outputs
from distil.methods.logits import CTKD, DIST, DKD, KD, LSKD, MLKD, NKD, dkd_parts, pearson, soft_kl


def logits(seed: int, shape=(6, 5)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * 2


S, T, Y = logits(0), logits(1), torch.tensor([0, 1, 2, 3, 4, 0])


def test_dkd_parts_decompose_kd():
    # Zhao et al. eq. 5: KD = TCKD + (1 - p_t^T) NCKD, per sample, with p_t^T the teacher's target probability.
    for temperature in (1.0, 4.0):
        tckd, nckd = dkd_parts(S, T, Y, temperature)
        p_target = F.softmax(T / temperature, -1).gather(1, Y[:, None]).squeeze(1)
        kd = F.kl_div(F.log_softmax(S / temperature, -1), F.softmax(T / temperature, -1), reduction="none").sum(1)
        assert torch.allclose(tckd + (1 - p_target) * nckd, kd * temperature**2, atol=1e-5)


def test_dkd_is_alpha_tckd_plus_beta_nckd_by_hand():
    s, t, y = torch.tensor([[2.0, 0.0, -1.0]]), torch.tensor([[1.0, 1.0, 0.0]]), torch.tensor([0])
    ps, pt = F.softmax(s, -1)[0].tolist(), F.softmax(t, -1)[0].tolist()
    tckd = pt[0] * math.log(pt[0] / ps[0]) + (1 - pt[0]) * math.log((1 - pt[0]) / (1 - ps[0]))
    qs = [p / (1 - ps[0]) for p in ps[1:]]
    qt = [p / (1 - pt[0]) for p in pt[1:]]
    nckd = sum(a * math.log(a / b) for a, b in zip(qt, qs))
    value = DKD(alpha=1.0, beta=8.0, temperature=1.0)(Outputs(s), Outputs(t), y)
    assert value.item() == pytest.approx(tckd + 8 * nckd, rel=1e-5)
    assert DKD(alpha=1.0, beta=1.0)(Outputs(S), Outputs(S.clone()), Y).item() == pytest.approx(0.0, abs=1e-6)


def test_dkd_warms_up_linearly():
    dkd = DKD(warmup=0.5)
    full = DKD()(Outputs(S), Outputs(T), Y)
    dkd.set_progress(0.25)
    assert dkd(Outputs(S), Outputs(T), Y).item() == pytest.approx(0.5 * full.item(), rel=1e-5)
    dkd.set_progress(0.9)
    assert dkd(Outputs(S), Outputs(T), Y).item() == pytest.approx(full.item(), rel=1e-5)


def test_dist_relations_are_invariant_to_shifts_and_zero_at_equality():
    dist = DIST(temperature=2.0)
    shifted = S + torch.randn(6, 1) * 5  # a constant per sample: softmax, hence DIST, cannot see it
    assert dist(Outputs(S), Outputs(T), Y).item() == pytest.approx(dist(Outputs(shifted), Outputs(T), Y).item(),
                                                                   rel=1e-5)
    assert dist(Outputs(S), Outputs(S.clone()), Y).item() == pytest.approx(0.0, abs=1e-5)
    # the Pearson correlation it is built on ignores positive linear maps of the predictions
    a, b = torch.rand(4, 7), torch.rand(4, 7)
    assert torch.allclose(pearson(3 * a + 0.2, b), pearson(a, b), atol=1e-6)
    p = F.softmax(T, -1)
    inter = 1 - pearson(p, 2 * p + 1).mean()
    assert inter.item() == pytest.approx(0.0, abs=1e-6)


def test_ls_kd_is_invariant_to_each_models_shift_and_scale():
    ls = LSKD(temperature=2.0)
    base = ls(Outputs(S), Outputs(T), Y).item()
    moved = ls(Outputs(3.0 * S + 7.0), Outputs(0.5 * T - 2.0), Y).item()
    assert moved == pytest.approx(base, rel=1e-4)
    assert ls(Outputs(5 * T + 1), Outputs(T), Y).item() == pytest.approx(0.0, abs=1e-5)
    assert KD(temperature=2.0)(Outputs(5 * T + 1), Outputs(T), Y).item() > 0.1  # plain KD sees the scale


def test_mlkd_sums_instance_batch_and_class_alignment_by_hand():
    t = 2.0
    p_s, p_t = F.softmax(S / t, -1), F.softmax(T / t, -1)
    batch = ((p_s @ p_s.T - p_t @ p_t.T) ** 2).sum() / 36  # means over the 6 x 6 and 5 x 5 entries
    classes = ((p_s.T @ p_s / 6 - p_t.T @ p_t / 6) ** 2).sum() / 25
    expected = soft_kl(S, T, t) + 2 * batch + 0.5 * classes
    mlkd = MLKD(temperatures=[t], batch=2.0, classes=0.5)
    assert mlkd(Outputs(S), Outputs(T), Y).item() == pytest.approx(expected.item(), rel=1e-5)
    assert MLKD()(Outputs(S), Outputs(S.clone()), Y).item() == pytest.approx(0.0, abs=1e-5)


def test_ctkd_temperature_ascends_the_loss_while_the_student_descends_it():
    ctkd = CTKD(warmup=0.5)
    assert ctkd.strength() == 0.0
    ctkd.set_progress(0.25)
    assert ctkd.strength() == pytest.approx(0.5)
    ctkd.set_progress(0.8)
    assert ctkd.strength() == pytest.approx(1.0)
    s = S.clone().requires_grad_(True)
    ctkd(Outputs(s), Outputs(T), Y).backward()
    # the same loss with theta as a plain parameter: the reversed gradient must be its negation
    theta = torch.ones((), requires_grad=True)
    temp = 1 + 20 * torch.sigmoid(theta)
    (F.kl_div(F.log_softmax(S / temp, -1), F.log_softmax(T / temp, -1), log_target=True,
              reduction="batchmean") * temp**2).backward()
    assert ctkd.theta.grad.item() == pytest.approx(-theta.grad.item(), rel=1e-4)
    assert s.grad.abs().sum() > 0
    assert float(ctkd.temperature) == pytest.approx(1 + 20 * torch.sigmoid(torch.tensor(1.0)).item())


def test_nkd_by_hand():
    s, t, y = torch.tensor([[1.0, 0.0, -1.0]]), torch.tensor([[0.5, 1.5, 0.0]]), torch.tensor([1])
    ps, pt = F.softmax(s, -1)[0].tolist(), F.softmax(t, -1)[0].tolist()
    target = -pt[1] * math.log(ps[1])
    qs = [ps[0] / (ps[0] + ps[2]), ps[2] / (ps[0] + ps[2])]
    qt = [pt[0] / (pt[0] + pt[2]), pt[2] / (pt[0] + pt[2])]
    non_target = -sum(a * math.log(b) for a, b in zip(qt, qs))
    value = NKD(temperature=1.0, gamma=1.5)(Outputs(s), Outputs(t), y).item()
    assert value == pytest.approx(target + 1.5 * non_target, rel=1e-5)
