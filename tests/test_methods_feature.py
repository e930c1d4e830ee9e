"""Feature, relation and contrastive methods: hand computations, stated properties, and where gradients go."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distil.batch import Batch
from distil.errors import DistilError
from distil.methods.base import Outputs, method_class
from distil.methods.contrastive import nce_loss, similarities
from distil.methods.feature import AB, AT, FSP, NST, OFD, VID, attention, hcl
from distil.methods.relation import CC, PKT, RKD, SP
from distil.models import build_model
from distil.recipe import ModelConfig
from distil.taps import Taps
from distil.teachers import LiveTeacher

# tap parameters per method for a resnet8 student and a resnet14 teacher (both 16-16-32-64 wide)
TAPS = {
    "fitnet": {"student": "layer2", "teacher": "layer3"},
    "at": {"student": ["layer2", "layer3"], "teacher": ["layer2", "layer3"]},
    "nst": {"student": "layer3", "teacher": "layer3"},
    "fsp": {"student": ["layer1", "layer2", "layer3"], "teacher": ["layer1", "layer2", "layer3"]},
    "ab": {"student": "layer3.0.relu2:input", "teacher": "layer3.1.relu2:input", "init_epochs": 1},
    "vid": {"student": ["layer2", "layer3"], "teacher": ["layer2", "layer3"]},
    "ft": {"student": "layer3", "teacher": "layer3", "init_epochs": 1},
    "ofd": {"student": "layer3.0.relu2:input", "teacher": "layer3.1.relu2:input"},
    "reviewkd": {"student": ["layer1", "layer2", "layer3"], "teacher": ["layer1", "layer2", "layer3"]},
}
FEATURE_METHODS = [*TAPS, "sp", "rkd", "pkt", "cc", "crd"]
X = torch.randn(6, 3, 8, 8, generator=torch.Generator().manual_seed(0))


def resnet(name: str, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelConfig(name=name), (3, 8, 8), 4)


def run(method, student: nn.Module, teacher: LiveTeacher, x: torch.Tensor = X) -> tuple[Outputs, Outputs]:
    """The student's outputs with its taps (and gradients) and the live teacher's, as the engine makes them."""
    index = torch.arange(len(x))
    taps = Taps(student, method.student_taps())
    with taps:
        logits = student(x)
    return Outputs(logits, taps.pop(), index), teacher.outputs(Batch(index, x, torch.zeros(len(x)).long()))


def built(name: str, student: nn.Module, teacher: LiveTeacher, **params):
    method = method_class(name)(**{**TAPS.get(name, {}), **params})
    teacher.tap(method.teacher_taps())
    with torch.no_grad():
        method.prepare(*run(method, student.eval(), teacher), num_samples=len(X))
    student.train()
    return method


@pytest.mark.parametrize("name", FEATURE_METHODS)
def test_gradients_reach_the_student_and_its_connectors_never_the_teacher(name):
    student, teacher_model = resnet("resnet8"), resnet("resnet14", seed=1)
    teacher = LiveTeacher(teacher_model)
    method = built(name, student, teacher)
    s_out, t_out = run(method, student, teacher)
    loss = method(s_out, t_out, torch.zeros(len(X)).long())
    assert torch.isfinite(loss) and loss.item() != 0
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
    own = [p for p in method.parameters() if p.requires_grad]
    assert all(p.grad is not None for p in own)
    assert all(p.grad is None for p in teacher_model.parameters())
    assert not any(f.requires_grad for f in t_out.features.values())


@pytest.mark.parametrize("name", ["at", "nst", "fsp", "sp", "rkd", "pkt", "cc"])
def test_zero_when_the_student_is_the_teacher(name):
    model = resnet("resnet8")
    taps = {k: v for k, v in TAPS.get(name, {}).items()}
    if "teacher" in taps:
        taps["teacher"] = taps["student"]
    method = method_class(name)(**taps)
    teacher = LiveTeacher(resnet("resnet8"), taps=method.teacher_taps())
    with torch.no_grad():
        s_out, t_out = run(method, model.eval(), teacher)
        method.prepare(s_out, t_out, len(X))
        assert method(s_out, t_out, torch.zeros(6).long()).item() == pytest.approx(0.0, abs=1e-6)


def maps(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_at_by_hand_and_across_widths_and_sizes():
    f = torch.tensor([[[[1.0, 2.0]], [[3.0, 0.0]]]])  # (1, 2, 1, 2): channel means of f^2 are (5, 2)
    assert torch.allclose(attention(f, 2), torch.tensor([[5.0, 2.0]]) / math.sqrt(29))
    at = AT(student="s", teacher="t")
    fs, ft = maps(2, 3, 8, 8), maps(2, 7, 4, 4, seed=1)  # other widths, other size: the student map is pooled
    expected = (attention(F.adaptive_avg_pool2d(fs, 4), 2) - attention(ft, 2)).pow(2).sum(1).mean()
    assert at(Outputs(fs, {"s": fs}), Outputs(ft, {"t": ft}), None).item() == pytest.approx(expected.item())
    with pytest.raises(DistilError, match="compares spatial maps"):
        at.prepare(Outputs(fs, {"s": fs.mean((2, 3))}), Outputs(ft, {"t": ft.mean((2, 3))}), 2)


def test_nst_ignores_the_scale_of_each_channel_map():
    nst = NST(student="s", teacher="t")
    fs, ft = maps(2, 3, 4, 4), maps(2, 5, 4, 4, seed=1)
    base = nst(Outputs(fs, {"s": fs}), Outputs(ft, {"t": ft}), None).item()
    scaled = fs * torch.tensor([0.5, 3.0, 10.0]).reshape(1, 3, 1, 1)
    assert nst(Outputs(fs, {"s": scaled}), Outputs(ft, {"t": ft}), None).item() == pytest.approx(base, rel=1e-5)


def test_fsp_matrix_by_hand_and_width_check():
    a = torch.tensor([[[[1.0, 2.0]], [[0.0, 1.0]]]])  # (1, 2, 1, 2)
    b = torch.tensor([[[[3.0, 1.0]]]])  # (1, 1, 1, 2)
    fsp = FSP(student=["a", "b"], teacher=["c", "d"])
    g_t = torch.zeros(1, 2, 1)
    teacher = Outputs(a, {"c": torch.zeros_like(a), "d": b})
    value = fsp(Outputs(a, {"a": a, "b": b}), teacher, None).item()  # G = a b^T / 2 = [[2.5], [0.5]]
    assert value == pytest.approx(F.mse_loss(torch.tensor([[[2.5], [0.5]]]), g_t).item())
    with pytest.raises(DistilError, match="same channel widths"):
        fsp.prepare(Outputs(a, {"a": a, "b": b}), Outputs(a, {"c": a, "d": torch.cat([b, b], 1)}), 1)


def test_ab_margin_loss_by_hand():
    ab = AB(student="s", teacher="t", margin=1.0)
    s = torch.tensor([[[0.5, -2.0, 0.2, 3.0]]])  # (1, 1, 4): with an identity connector
    t = torch.tensor([[[-1.0, -1.0, 2.0, 1.0]]])
    ab.prepare(Outputs(s, {"s": s}), Outputs(t, {"t": t}), 1)
    ab.connectors[0] = nn.Identity()
    # teacher off: (s + 1)^2 where s > -1 -> 1.5^2 (pos 0); teacher on: (s - 1)^2 where s <= 1 -> 0.8^2 (pos 2)
    assert ab(Outputs(s, {"s": s}), Outputs(t, {"t": t}), None).item() == pytest.approx((2.25 + 0.64) / 1000)


def test_ofd_margin_from_negative_responses_and_partial_l2():
    ofd = OFD(student="s", teacher="t")
    t = torch.tensor([[[-1.0, -3.0, 2.0, 0.5]]])  # one channel: margin = mean of its negatives = -2
    s = torch.tensor([[[-2.5, -1.0, 1.0, 0.5]]])
    ofd.prepare(Outputs(s, {"s": s}), Outputs(t, {"t": t}), 1)
    assert ofd.margin0.flatten().tolist() == [-2.0]
    ofd.connectors[0] = nn.Identity()
    # target max(t, -2) = (-1, -2, 2, 0.5); counted where s > target or target > 0: positions 1, 2, 3
    expected = (1.0 ** 2 + 1.0 ** 2 + 0.0) / 1000
    assert ofd(Outputs(s, {"s": s}), Outputs(t, {"t": t}), None).item() == pytest.approx(expected)


def test_vid_is_a_gaussian_negative_log_likelihood():
    vid = VID(student="s", teacher="t", init_var=2.0)
    fs, ft = maps(3, 4, 2, 2), maps(3, 5, 2, 2, seed=1)
    vid.prepare(Outputs(fs, {"s": fs}), Outputs(ft, {"t": ft}), 3)
    regressor = vid.regressors[0]
    assert torch.allclose(regressor.variance(), torch.full((5,), 2.0), atol=1e-4)
    mean = regressor.mean(fs)
    expected = (0.5 * ((mean - ft) ** 2 / 2.0 + math.log(2.0))).mean()
    assert vid(Outputs(fs, {"s": fs}), Outputs(ft, {"t": ft}), None).item() == pytest.approx(expected.item(), rel=1e-4)


def test_reviewkd_hierarchical_context_loss_by_hand():
    fs = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    ft = torch.zeros(1, 1, 2, 2)
    # full size: mean of squares 7.5; pooled to 1x1 (weight 1/2): 2.5^2; normalized by 1.5
    assert hcl(fs, ft).item() == pytest.approx((7.5 + 0.5 * 6.25) / 1.5)


def test_reviewkd_fuses_student_levels_into_each_teacher_level():
    student, teacher = resnet("resnet8"), LiveTeacher(resnet("resnet8x4"))
    method = built("reviewkd", student, teacher, mid_channels=8)
    s_out, t_out = run(method, student, teacher)
    assert [f.expand[0].out_channels for f in method.fusions] == [64, 128, 256]  # the teacher's widths
    assert [f.attention is not None for f in method.fusions] == [True, True, False]  # the deepest does not fuse
    assert torch.isfinite(method(s_out, t_out, None))


def test_ft_paraphraser_is_frozen_outside_its_stage():
    student, teacher = resnet("resnet8"), LiveTeacher(resnet("resnet14"))
    method = built("ft", student, teacher)
    stage = method.pretraining(student)
    assert stage.epochs == 1 and not stage.needs_student
    assert all(not p.requires_grad for p in stage.parameters)  # the engine unfreezes them for the stage only
    assert all(p.requires_grad for p in method.translator.parameters())
    _, t_out = run(method, student, teacher)
    assert stage.loss(None, t_out, None).item() > 0


def test_relations_ignore_the_scale_of_the_student_features():
    fs, ft = maps(5, 6), maps(5, 9, seed=1)
    for method in (SP(), RKD(), PKT()):
        base = method(Outputs(fs, {"@embedding": fs}), Outputs(ft, {"@embedding": ft}), None).item()
        scaled = method(Outputs(fs, {"@embedding": 7 * fs}), Outputs(ft, {"@embedding": ft}), None).item()
        assert scaled == pytest.approx(base, rel=1e-4), method.name
    rkd = RKD()  # distances and angles do not move with a translation either
    moved = rkd(Outputs(fs, {"@embedding": fs + 3}), Outputs(ft, {"@embedding": ft}), None).item()
    assert moved == pytest.approx(rkd(Outputs(fs, {"@embedding": fs}), Outputs(ft, {"@embedding": ft}),
                                      None).item(), rel=1e-4)


def test_cc_correlation_by_hand():
    fs = torch.tensor([[1.0, 0.0], [0.0, 1.0]])  # orthogonal: cosine 0
    ft = torch.tensor([[1.0, 0.0], [1.0, 0.0]])  # identical: cosine 1
    k = [math.exp(-0.8) * sum(0.8 ** p / math.factorial(p) * c ** p for p in range(3)) for c in (0.0, 1.0)]
    expected = 2 * (k[0] - k[1]) ** 2 / 4  # the two off-diagonal entries differ, the diagonals agree
    cc = CC(gamma=0.4, order=2)
    assert cc(Outputs(fs, {"@embedding": fs}), Outputs(ft, {"@embedding": ft}), None).item() == \
        pytest.approx(expected, rel=1e-5)


def test_crd_memory_bank_keyed_by_sample_index():
    student, teacher = resnet("resnet8"), LiveTeacher(resnet("resnet14"))
    crd = method_class("crd")(feat_dim=8, nce_k=100)
    teacher.tap(crd.teacher_taps())
    with torch.no_grad():
        crd.prepare(*run(crd, student.eval(), teacher), num_samples=20)
    memory = crd.memory_s.clone()
    s_out, t_out = run(crd, student.train(), teacher, X[:4])
    s_out.index = torch.tensor([3, 7, 11, 19])
    loss = crd(s_out, t_out, None)
    changed = (crd.memory_s != memory).any(1).nonzero().flatten().tolist()
    assert changed == [3, 7, 11, 19] and torch.allclose(crd.memory_s[3].norm(), torch.tensor(1.0))
    z = crd.z.clone()
    assert (z > 0).all()
    loss.backward()  # the bank changed in place after scoring: backward still works
    s_out, t_out = run(crd, student, teacher, X[:4])
    s_out.index = torch.tensor([3, 7, 11, 19])
    crd(s_out, t_out, None).backward()
    assert torch.equal(crd.z, z)  # the normalizers are fixed at the first step
    assert crd.embed_s.weight.grad is not None and crd.embed_t.weight.grad is not None
    s_out.index = None
    with pytest.raises(DistilError, match="index"):
        crd(s_out, t_out, None)


def test_nce_loss_by_hand():
    scores = torch.tensor([[2.0, 0.5, 1.0]])  # positive first, K = 2 noise samples, N = 4 -> noise mass 0.5
    expected = -(math.log(2 / 2.5) + math.log(0.5 / 1.0) + math.log(0.5 / 1.5))
    assert nce_loss(scores, 4).item() == pytest.approx(expected, rel=1e-5)


def test_crd_scores_the_same_through_either_path():
    v, memory = torch.randn(4, 8), torch.randn(50, 8)
    rows = torch.randint(0, 50, (4, 20))
    gathered = torch.bmm(memory[rows], v[:, :, None]).squeeze(2)
    assert torch.allclose(similarities(v, memory, rows), gathered, atol=1e-5)  # one (B, N) product
    assert torch.allclose(similarities(v, memory, rows[:, :5]), gathered[:, :5], atol=1e-5)  # rows gathered
