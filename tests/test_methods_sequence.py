"""Sequence divergences over per-token logits (B, L, V) with the -100 padding mask."""

import math

import pytest
import torch
import torch.nn.functional as F

from distil.methods import build_objective
from distil.methods.base import Outputs, method_class
from distil.methods.logits import KD
from distil.recipe import LossTerm

NAMES = ["fkl", "rkl", "jsd", "skew_fkl", "skew_rkl", "tvd"]
g = torch.Generator().manual_seed(0)
S, T = torch.randn(2, 5, 7, generator=g), torch.randn(2, 5, 7, generator=g)
Y = torch.tensor([[1, 2, 3, -100, -100], [4, 5, 6, 0, -100]])


def value(name: str, s=S, t=T, y=Y, **params) -> float:
    return method_class(name)(**params)(Outputs(s), Outputs(t), y).item()


def kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q))


@pytest.mark.parametrize("name", NAMES)
def test_zero_when_student_equals_teacher_and_padding_is_ignored(name):
    assert value(name, s=T.clone()) == pytest.approx(0.0, abs=1e-6)
    noisy = T.clone()
    noisy[Y == -100] += 100 * torch.randn(int((Y == -100).sum()), 7)  # padded positions may hold anything
    assert value(name, t=noisy) == pytest.approx(value(name), rel=1e-6)
    assert value(name, y=torch.full_like(Y, -100)) == 0.0  # nothing counted: no NaN


@pytest.mark.parametrize("name", NAMES)
def test_each_divergence_by_hand_at_one_position(name):
    s, t = torch.tensor([[[1.0, 0.0, -1.0]]]), torch.tensor([[[0.0, 1.0, 0.5]]])
    p, q = F.softmax(t, -1)[0, 0].tolist(), F.softmax(s, -1)[0, 0].tolist()  # teacher p, student q
    mix = [0.5 * a + 0.5 * b for a, b in zip(p, q)]
    expected = {
        "fkl": kl(p, q),
        "rkl": kl(q, p),
        "jsd": 0.5 * kl(p, mix) + 0.5 * kl(q, mix),
        "skew_fkl": kl(p, [0.1 * a + 0.9 * b for a, b in zip(p, q)]),
        "skew_rkl": kl(q, [0.1 * b + 0.9 * a for a, b in zip(p, q)]),
        "tvd": 0.5 * sum(abs(a - b) for a, b in zip(p, q)),
    }[name]
    assert value(name, s=s, t=t, y=torch.tensor([[2]])) == pytest.approx(expected, rel=1e-5)


def test_limits_and_bounds():
    assert value("jsd") <= math.log(2) and value("tvd") <= 1
    assert value("skew_fkl", alpha=0.0) == pytest.approx(value("fkl"), rel=1e-6)
    assert value("skew_rkl", alpha=0.0) == pytest.approx(value("rkl"), rel=1e-6)
    # on per-sample logits with class labels, fkl at temperature T is Hinton's KD
    s, t, y = S[:, 0], T[:, 0], torch.tensor([1, 2])
    kd = KD(temperature=3.0)(Outputs(s), Outputs(t), y).item()
    assert value("fkl", s=s, t=t, y=y, temperature=3.0) == pytest.approx(kd, rel=1e-5)


def test_masked_mean_weights_every_real_token_alike():
    # the loss over a batch equals the mean of the per-token losses of its real tokens, whatever the row lengths
    per_token = [value("fkl", s=S[b:b + 1, i:i + 1], t=T[b:b + 1, i:i + 1], y=Y[b:b + 1, i:i + 1])
                 for b in range(2) for i in range(5) if Y[b, i] != -100]
    assert value("fkl") == pytest.approx(sum(per_token) / len(per_token), rel=1e-5)


def test_gradients_reach_the_student_only():
    s, t = S.clone().requires_grad_(True), T.clone().requires_grad_(True)
    objective = build_objective([LossTerm(name=n) for n in NAMES])
    total, terms = objective(Outputs(s), Outputs(t.detach()), Y)
    total.backward()
    assert set(terms) == set(NAMES) and t.grad is None
    assert s.grad[Y == -100].abs().sum() == 0 and s.grad[Y != -100].abs().sum() > 0
