"""Strategy building blocks on known answers: schedules, per-sample weights, ensembles, augmentation, mutual learning,
forgetting, and the recipe checks."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from distil.batch import Batch
from distil.data import IndexedTensorDataset
from distil.engine import Fit
from distil.errors import DistilError
from distil.methods import CE, KD, Objective, build_objective
from distil.methods.base import Outputs
from distil.recipe import LossTerm, Schedule, TrainConfig, validate_recipe
from distil.strategies.augment_distill import Adversarial, CutMix, Mixup
from distil.strategies.continual import forgetting, resolve_tasks, step_objective
from distil.strategies.multi_teacher import Ensemble, EnsembleTeacher, combine
from distil.strategies.online import Cohort, MutualObjective
from distil.strategies.schedules import Scheduled, scheduled_objective, value_at
from distil.strategies.terms import Columns, RowSelect, SampleWeighted, labeled
from distil.strategies.transfer_set import transfer_methods
from distil.teachers import LiveTeacher


def test_schedule_values():
    assert value_at(Schedule(kind="constant", start=3), 0.7) == 3
    assert value_at(Schedule(kind="linear", start=0, end=1), 0.25) == pytest.approx(0.25)
    cosine = Schedule(kind="cosine", start=8, end=2)
    assert [value_at(cosine, p) for p in (0, 0.5, 1)] == pytest.approx([8, 5, 2])
    assert value_at(Schedule(kind="warmup", start=0, end=1, warmup=0.2), 0.1) == pytest.approx(0.5)
    assert value_at(Schedule(kind="warmup", start=0, end=1, warmup=0.2), 0.6) == 1
    step = Schedule(kind="step", start=1, milestones=[0.5, 0.75], gamma=0.1)
    assert [value_at(step, p) for p in (0.4, 0.5, 0.9)] == pytest.approx([1, 0.1, 0.01])
    with pytest.raises(ValueError, match="end"):
        Schedule(kind="linear", start=1)


class Recorder(nn.Module):
    """A listener the engine should call before every step."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def set_progress(self, p):
        self.seen.append(p)


def test_engine_reports_progress_and_schedules_move_weight_and_temperature():
    x = torch.randn(40, 4)
    data = IndexedTensorDataset(x, (x[:, 0] > 0).long())
    kd = Scheduled(KD(weight=0.0, temperature=4.0), {"weight": Schedule(kind="linear", start=0, end=1),
                                                      "temperature": Schedule(kind="linear", start=8, end=2)})
    recorder = Recorder()
    objective = Objective([CE(), kd])
    objective.recorder = recorder
    teacher = nn.Linear(4, 2)
    Fit(stage="t", model=nn.Linear(4, 2), objective=objective, train=data, val=None,
        cfg=TrainConfig(epochs=2, batch_size=10), device=torch.device("cpu"), teacher=LiveTeacher(teacher),
        quiet=True).run()
    assert recorder.seen == pytest.approx([i / 8 for i in range(8)])
    assert kd.weight == pytest.approx(7 / 8) and kd.params.temperature == pytest.approx(8 - 6 * 7 / 8)


def test_sample_weights_scale_each_samples_gradient():
    torch.manual_seed(0)
    student, teacher, target = torch.randn(6, 3, requires_grad=True), torch.randn(6, 3) * 3, torch.arange(6) % 3
    SampleWeighted(KD(temperature=2.0), "confidence")(Outputs(student), Outputs(teacher), target).backward()
    weights = teacher.softmax(-1).max(-1).values
    reference = student.detach().clone().requires_grad_(True)
    kd = KD(temperature=2.0)
    per_sample = torch.stack([kd(Outputs(reference[i:i + 1]), Outputs(teacher[i:i + 1]), target[i:i + 1])
                              for i in range(6)])
    (per_sample * weights).mean().backward()
    assert torch.allclose(student.grad, reference.grad, atol=1e-6)
    right = SampleWeighted(KD(), "correctness")
    y = teacher.argmax(-1)
    y[0] = (y[0] + 1) % 3
    s = student.detach().clone().requires_grad_(True)
    right(Outputs(s), Outputs(teacher), y).backward()
    assert s.grad[0].abs().sum() == 0 and s.grad[1:].abs().sum() > 0


def test_row_select_and_columns():
    student, teacher = torch.randn(4, 5), torch.randn(4, 5)
    target = torch.tensor([1, -1, 3, -1])
    picked = RowSelect(CE(), labeled)(Outputs(student), None, target)
    assert picked == pytest.approx(F.cross_entropy(student[[0, 2]], target[[0, 2]]).item())
    assert RowSelect(CE(), labeled)(Outputs(student), None, torch.full((4,), -1)) == 0
    cut = Columns(CE(), [3, 1], 5)(Outputs(student), Outputs(teacher), torch.tensor([1, 3, 3, 1]))
    assert cut == pytest.approx(F.cross_entropy(student[:, [3, 1]], torch.tensor([1, 0, 0, 1])).item())


def test_scheduled_objective_from_recipe_terms():
    recipe = validate_recipe({"distill": {"losses": [
        {"name": "ce", "weight": 0.5},
        {"name": "kd", "weight": 0.9, "temperature": 4, "sample_weight": "correctness",
         "schedule": {"temperature": {"kind": "linear", "start": 6, "end": 2}}}]}})
    assert recipe.distill.losses[1].params == {"temperature": 4}
    objective = scheduled_objective(recipe.distill.losses)
    kd = objective.methods[1]
    assert isinstance(kd, Scheduled) and isinstance(kd.inner, SampleWeighted)
    assert objective.term_names() == ["ce", "kd"] and kd.params.temperature == 6


def test_combine_rules_on_known_probabilities():
    probs = torch.tensor([[[0.9, 0.1], [0.5, 0.5]],
                          [[0.3, 0.7], [0.2, 0.8]]])  # (teachers, batch, classes)
    ones = torch.ones(2)
    assert torch.allclose(combine(probs, "mean", ones), probs.mean(0))
    weighted = combine(probs, "weights", torch.tensor([3.0, 1.0]))
    assert torch.allclose(weighted[0], torch.tensor([0.75, 0.25]))
    best = combine(probs, "best", ones, torch.tensor([1, 0]))
    assert torch.allclose(best, torch.tensor([[0.3, 0.7], [0.5, 0.5]]))
    sure = combine(probs, "best", ones)  # labels unknown: the most confident teacher
    assert torch.allclose(sure, torch.tensor([[0.9, 0.1], [0.2, 0.8]]))
    conf = combine(probs, "confidence", ones)
    assert conf[1, 1] > probs[:, 1, 1].mean()  # the sure teacher counts more on sample 2


def test_ensemble_maps_teacher_classes_and_feeds_the_engine():
    wide, narrow = nn.Linear(3, 4), nn.Linear(3, 2)
    ensemble = Ensemble([wide, narrow], "mean", classes=[None, [3, 1]], num_classes=4)
    x = torch.randn(5, 3)
    full, part = wide(x).softmax(-1), narrow(x).softmax(-1)
    specialist = full.clone()  # the wide teacher's mass on classes 3 and 1, shared out as the narrow one says
    specialist[:, [3, 1]] = (full[:, 3] + full[:, 1]).unsqueeze(-1) * part
    expected = (full + specialist) / 2
    assert torch.allclose(ensemble(x).exp(), expected, atol=1e-6)
    source = EnsembleTeacher(ensemble)
    out = source.outputs(Batch(torch.arange(5), x, torch.zeros(5, dtype=torch.long)))
    assert torch.allclose(out.logits.exp(), expected, atol=1e-6)
    with pytest.raises(DistilError, match="features_from"):
        EnsembleTeacher(ensemble, features_from=2)


def test_a_specialist_never_moves_mass_onto_its_classes_from_the_others():
    general = torch.tensor([[0.05, 0.05, 0.9], [0.6, 0.3, 0.1]]).log()  # samples of class 2, then of class 0
    specialist = torch.tensor([[8.0, 0.0], [0.0, 8.0]])  # knows classes 0 and 1 only: sure, and wrong, on both
    for rule in ("mean", "confidence"):
        probs = Ensemble([nn.Identity(), nn.Identity()], rule, classes=[None, [0, 1]],
                         num_classes=3).combine([general, specialist]).exp()
        assert probs[0].argmax() == 2 and torch.isclose(probs[0, 2], torch.tensor(0.9))  # not its class: no say
        assert probs[1, 1] > general[1].exp()[1]  # among its classes it counts: class 1 gains on sample 2
        assert torch.isclose(probs[1, :2].sum(), torch.tensor(0.9))  # but the two keep the mass they had


def test_an_ensemble_teacher_taps_the_features_of_features_from_and_feature_losses_train():
    torch.manual_seed(0)
    t0 = nn.Sequential(nn.Linear(3, 6), nn.ReLU(), nn.Linear(6, 2))
    t1 = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    data = IndexedTensorDataset(torch.randn(32, 3), torch.randint(0, 2, (32,)))
    source = EnsembleTeacher.of([t0, t1], features_from=1)
    source.tap(["1"])
    out = source.outputs(Batch(torch.arange(4), data.x[:4], data.y[:4]))
    assert torch.equal(out.features["1"], t1[1](t1[0](data.x[:4])).detach())
    objective = build_objective([LossTerm(name="kd"), LossTerm(name="fitnet", student="1", teacher="1")])
    student = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2))
    Fit(stage="distill", model=student, objective=objective, train=data, val=None,
        cfg=TrainConfig(epochs=1, batch_size=8), device=torch.device("cpu"),
        teacher=EnsembleTeacher.of([t0, t1], features_from=1), quiet=True).run()
    regressor = objective.methods[1].regressors[0]
    assert [p.shape for p in regressor.parameters()][0][:2] == (5, 4)  # student 4 -> teacher 1's 5 features


class Attaching(KD):
    """KD that records the engine attaching and detaching it (as text layer losses configure the models)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[str] = []

    def attach(self, student: nn.Module, teacher) -> None:
        self.calls.append("attach")

    def detach(self) -> None:
        self.calls.append("detach")


def test_the_engine_attaches_wrapped_terms():
    torch.manual_seed(0)
    data = IndexedTensorDataset(torch.randn(20, 4), torch.randint(0, 2, (20,)))
    inner = [Attaching(), Attaching()]
    wrapped = [SampleWeighted(inner[0], "confidence"),
               Scheduled(inner[1], {"weight": Schedule(kind="linear", start=0, end=1)})]
    Fit(stage="t", model=nn.Linear(4, 2), objective=Objective(wrapped), train=data, val=None,
        cfg=TrainConfig(epochs=1, batch_size=10), device=torch.device("cpu"), teacher=LiveTeacher(nn.Linear(4, 2)),
        quiet=True).run()
    assert inner[0].calls == inner[1].calls == ["attach", "detach"]


def test_mixup_cutmix_and_adversarial_batches():
    torch.manual_seed(0)
    batch = Batch(torch.arange(8), torch.randn(8, 1, 6, 6), torch.arange(8) % 3)
    mixed = Mixup(alpha=1.0)(batch, nn.Identity())
    assert mixed.x.shape[0] == 16 and torch.equal(mixed.x[:8], batch.x) and torch.equal(mixed.index[8:], batch.index)
    only = Mixup(alpha=0.5, keep_clean=False)(batch, nn.Identity())
    assert only.x.shape == batch.x.shape and not torch.equal(only.x, batch.x)
    cut = CutMix(alpha=1.0, keep_clean=False)(batch, nn.Identity())
    changed = (cut.x != batch.x).flatten(1).any(-1)
    assert cut.x.shape == batch.x.shape and changed.any()
    model = nn.Sequential(nn.Flatten(), nn.Linear(36, 3))
    flat = Batch(batch.index, batch.x, batch.y)
    adv = Adversarial(eps=0.1, steps=3, random_start=True, keep_clean=False)(flat, model)
    assert (adv.x - batch.x).abs().max() <= 0.1 + 1e-6
    fgsm = Adversarial(eps=0.1)(flat, model)
    with torch.no_grad():
        assert F.cross_entropy(model(fgsm.x[8:]), batch.y) > F.cross_entropy(model(batch.x), batch.y)
    assert model.training


def test_mutual_objective_is_the_sum_of_each_members_dml_loss():
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    cohort = Cohort([a, b])
    out = cohort(x)
    assert torch.equal(out.logits, a(x))
    loss, terms = MutualObjective([CE(), KD(temperature=1.0)], 2)(out, None, y)
    za, zb = a(x), b(x)
    expected = sum(F.cross_entropy(z, y) + F.kl_div(z.log_softmax(-1), p.detach().log_softmax(-1), log_target=True,
                                                    reduction="batchmean") for z, p in ((za, zb), (zb, za)))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert set(terms) == {"ce", "kd"}


def test_tasks_forgetting_and_lwf_step():
    assert resolve_tasks(3, 7) == [[0, 1, 2], [3, 4], [5, 6]]
    with pytest.raises(DistilError, match="distinct"):
        resolve_tasks([[0, 1], [1, 2]], 5)
    assert forgetting([[1.0], [0.8, 0.9], [0.5, 0.7, 1.0]]) == pytest.approx(((1.0 - 0.5) + (0.9 - 0.7)) / 2)
    objective = step_objective([CE(), KD()], new=[2, 3], old=[0, 1], scenario="task", num_classes=4, distill=True)
    ce, kd = objective.methods
    assert ce.classes.tolist() == [2, 3] and kd.classes.tolist() == [0, 1]
    plain = step_objective([CE(), KD()], new=[2, 3], old=[0, 1], scenario="class", num_classes=4, distill=False)
    assert len(plain.methods) == 1 and plain.methods[0].classes.tolist() == [0, 1, 2, 3]


def test_transfer_terms():
    methods = transfer_methods([CE(), KD()], use_labels=False, threshold=None)
    assert [m.name for m in methods] == ["kd"]
    with pytest.raises(DistilError, match="teacher term"):
        transfer_methods([CE()], use_labels=True, threshold=None)
    student, teacher = torch.randn(3, 2), torch.tensor([[5.0, 0.0], [0.1, 0.0], [0.0, 0.2]])
    kd = transfer_methods([KD()], use_labels=True, threshold=0.9)[0]
    kept = kd(Outputs(student), Outputs(teacher), torch.tensor([-1, -1, 1]))
    assert kept.item() == pytest.approx(KD()(Outputs(student[[0, 2]]), Outputs(teacher[[0, 2]]), None).item())


@pytest.mark.parametrize("raw, message", [
    ({"distill": {"generations": 2}}, "distill.generations is a setting of strategy self"),
    ({"distill": {"strategy": "multi_teacher", "teachers": [{"name": "mlp"}]}}, "at least two teachers"),
    ({"distill": {"strategy": "transfer_set"}}, "data.unlabeled"),
    ({"data": {"unlabeled": {"fraction": 0.5}}}, "transfer_set strategy only"),
    ({"distill": {"strategy": "continual"}}, "distill.tasks"),
    ({"distill": {"strategy": "continual", "tasks": 2}, "finetune": {}}, "finetune"),
    ({"distill": {"strategy": "self"}, "cache": {}}, "cache"),
    ({"distill": {"augment": {"kind": "mixup"}}, "cache": {}}, "distill.augment"),
    ({"distill": {"losses": [{"name": "kd", "schedule": {"tau": {"start": 1, "kind": "constant"}}}]}},
     "distill.losses.0.schedule.tau"),
    ({"distill": {"losses": [{"name": "ce", "sample_weight": "confidence"}]}}, "distill.losses.0.sample_weight"),
    ({"distill": {"strategy": "continual", "tasks": 2}, "eval": {"seeds": 3}}, "eval.seeds: the continual strategy"),
    ({"distill": {"strategy": "self"}, "eval": {"seeds": 2}}, "eval.seeds: the self strategy"),
    ({"distill": {"baseline": False}, "eval": {"seeds": 2}}, "eval.seeds: 2 paired seeds need the student alone"),
])
def test_recipe_checks_name_the_field(raw, message):
    with pytest.raises(DistilError, match=message.replace(".", r"\.")):
        validate_recipe(raw)


def test_default_recipe_dump_has_no_strategy_noise():
    import yaml

    from distil.recipe import dump_recipe

    losses = yaml.safe_load(dump_recipe(validate_recipe({})))["distill"]["losses"]
    assert losses == [{"name": "ce", "weight": 0.5}, {"name": "kd", "weight": 0.5, "temperature": 4.0}]


def test_unlabeled_pool_from_the_training_split_or_another_dataset():
    from distil.data import load_dataset
    from distil.recipe import DataConfig, UnlabeledConfig
    from distil.strategies.transfer_set import unlabeled_pool

    data = DataConfig(name="digits", limit=100)
    splits = load_dataset(data)
    rest, pool, hidden = unlabeled_pool(splits, UnlabeledConfig(fraction=0.5), data)
    assert len(rest.train) + len(pool) == len(splits.train) and (pool.y == -1).all() and len(hidden) == len(pool)
    assert set(hidden.tolist()) == set(rest.train.y.tolist())  # stratified: every class on both sides
    same, other, none = unlabeled_pool(splits, UnlabeledConfig(name="digits", limit=50), data)
    assert same is splits and len(other) == 50 and none is None
    with pytest.raises(DistilError, match="same input shape"):
        unlabeled_pool(splits, UnlabeledConfig(name="synthetic"), data)
