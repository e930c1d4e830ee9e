"""Guards that speak: checks a recipe run makes before and after training, each a warning in the log and the report
(results.json "warnings", report.md / report.html, the printed summary) when a run is set up to disappoint.

Before training: a student larger than its teacher. After training, before the evaluation: a model that evaluates
far below how it trains has its BatchNorm statistics recomputed on training data (and the report says so). After
the evaluation: a teacher near one class or below the student alone, a model at chance on test though it trains
well, a loss term that swamps the others, and a distilled student below the same student alone, with the likely
cause named."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.utils.data import Dataset

from distil.context import RunContext
from distil.data.indexed import IndexedTensorDataset
from distil.engine import predict, targets_of
from distil.models.batchnorm import batchnorm_layers, recalibrate
from distil.preflight import parameter_count
from distil.recipe import ModelConfig

log = logging.getLogger("distil")

STAGE_OF = {"teacher": "teach", "student": "distill", "alone": "alone", "finetuned": "finetune"}  # role -> stage
EVAL_GAP = 0.15  # eval-mode accuracy on training samples this far below the training accuracy: statistics are off
EVAL_SAMPLES = 2048  # training samples that gap is measured on
CHANCE_MARGIN = 0.05  # within this of always predicting the majority class: at chance
TRAINS_WELL = 0.25  # training accuracy this far above chance: the model did learn
ONE_CLASS_SHARE = 0.8  # a teacher predicting one class for this share of test samples (beyond the true share)
F1_RATIO = 0.75  # macro-F1 below this share of top-1: the teacher serves the large classes only
DOMINANCE = 10.0  # a term whose weighted gradient is this many times every other's swamps them
AS_WEIGHTED = 2.0  # ... unless the weights ask for it: per unit of weight the gradients are within this factor
BELOW_ALONE = 0.01  # distilled this far (top-1) below alone is worth a warning ...
SIGN_TEST_SIGMAS = 2.0  # ... when its losses exceed its wins by this many standard deviations (a sign test)


def parameters(model: nn.Module) -> int:
    """The model's parameter count."""
    return sum(p.numel() for p in model.parameters())


def larger_student(teacher_params: int, student_params: int) -> str | None:
    """The warning for a student with more parameters than its teacher, or None."""
    if student_params <= teacher_params:
        return None
    return (f"the student has {student_params:,} parameters, more than its teacher's {teacher_params:,}: "
            "distillation is meant to compress; choose a smaller student (fewer hidden units or channels, a lower "
            "student.width for mobilenetv2 / shufflenetv2) or a larger teacher.")


def before_training(run: RunContext) -> list[str]:
    """Warnings about the recipe's models before anything trains (zoo models, counted without building them)."""
    sizes = [_zoo_size(cfg, run) for cfg in (run.recipe.teacher, run.recipe.student)]
    if run.recipe.teacher.checkpoint or None in sizes:
        return []  # counted after training, from the models themselves
    warning = larger_student(*sizes)
    return [warning] if warning else []


def _zoo_size(cfg: ModelConfig, run: RunContext) -> int | None:
    try:
        return parameter_count(cfg, run.splits)
    except Exception:  # not a zoo model (python:, text, hf:): built only when it trains
        return None


def train_accuracies(records: Sequence[dict]) -> dict[str, float]:
    """Each stage's last logged training accuracy, by stage name."""
    found = {}
    for record in records:
        value = record.get("train_acc")
        if "epoch" in record and isinstance(value, float) and math.isfinite(value):
            found[record["stage"]] = value
    return found


def _training_subset(run: RunContext) -> Dataset:
    """Up to EVAL_SAMPLES training samples (a seeded draw) of tensor data, else the whole training split."""
    train = run.splits.train
    if len(train) <= EVAL_SAMPLES or not isinstance(getattr(train, "x", None), torch.Tensor):
        return train
    picked = torch.randperm(len(train), generator=torch.Generator().manual_seed(run.recipe.seed))[:EVAL_SAMPLES]
    return IndexedTensorDataset(train.x[picked], train.y[picked])


def eval_accuracy(model: nn.Module, data, device: torch.device) -> float:
    """Top-1 of `model` in eval mode on `data`."""
    return float((predict(model, data, device).argmax(-1) == targets_of(data)).float().mean())


def statistics_check(run: RunContext, models: dict[str, nn.Module]) -> list[str]:
    """Every BatchNorm model whose eval-mode accuracy on training samples falls far below its training accuracy:
    its BatchNorm statistics recomputed on training data (in place, so the evaluation uses them) and said."""
    trained = train_accuracies(run.log.records())
    warnings: list[str] = []
    subset = None
    for role, model in models.items():
        train_acc = trained.get(STAGE_OF.get(role, role))
        if train_acc is None or not batchnorm_layers(model):
            continue
        subset = subset if subset is not None else _training_subset(run)
        before = eval_accuracy(model, subset, run.device)
        if before >= train_acc - EVAL_GAP:
            continue
        seen = recalibrate(model, run.splits.train, run.device, batch_size=run.recipe.train.batch_size,
                           seed=run.recipe.seed)
        after = eval_accuracy(model, subset, run.device)
        run.log.write({"stage": "guards", "model": role, "bn_recalibrated": seen, "eval_train_acc_before": before,
                       "eval_train_acc_after": after})
        warnings.append(f"{role_label(role)} scored {before:.1%} in eval mode on its own training samples but "
                        f"trained at {train_acc:.1%}: its BatchNorm running statistics did not describe its final "
                        f"weights; they were recomputed on {seen} training samples (now {after:.1%}) and the "
                        "evaluation uses them.")
    return warnings


def role_label(role: str) -> str:
    """How a warning names a model role."""
    return {"student": "the distilled student", "alone": "the student trained alone",
            "teacher": "the teacher"}.get(role, f"the {role} model")


def teacher_checks(metrics: dict, predicted: torch.Tensor | None, target: torch.Tensor | None) -> list[str]:
    """A teacher that serves one class: macro-F1 far below its accuracy, or one class predicted for most samples."""
    warnings = []
    top1, f1 = metrics.get("top1"), metrics.get("f1")
    if top1 is not None and f1 is not None and f1 < F1_RATIO * top1:
        warnings.append(f"the teacher's macro-F1 ({f1:.2f}) is far below its accuracy ({top1:.1%}): it serves the "
                        "large classes and neglects the others, and the student learns the same; train the teacher "
                        "longer or on more data, or give it a checkpoint that covers every class.")
    if predicted is not None and target is not None and len(predicted):
        counts = torch.bincount(predicted.long().cpu())
        share = float(counts.max()) / len(predicted)
        true_share = float(torch.bincount(target.long().cpu()).max()) / len(target)
        if share >= ONE_CLASS_SHARE and share > true_share + TRAINS_WELL:
            warnings.append(f"the teacher predicts one class (class {int(counts.argmax())}) for {share:.0%} of the "
                            f"test samples, where that share is at most {true_share:.0%}: it is near one class, and "
                            "distilling it teaches the student the same.")
    return warnings


def chance_checks(results: dict, trained: dict[str, float], target: torch.Tensor) -> list[str]:
    """Models at chance on test (no better than always predicting the majority class) though they trained well."""
    chance = float(torch.bincount(target.long().cpu()).max()) / max(1, len(target))
    warnings = []
    for role, metrics in results.get("models", {}).items():
        train_acc, top1 = trained.get(STAGE_OF.get(role, role)), metrics.get("top1")
        if train_acc is None or top1 is None:
            continue
        if top1 <= chance + CHANCE_MARGIN and train_acc >= chance + TRAINS_WELL:
            warnings.append(f"{role_label(role)} is at chance on test ({top1:.1%}; the majority class alone gives "
                            f"{chance:.1%}) though it trained at {train_acc:.1%}: it memorised its training data or "
                            "the test data differs from it; use more data, regularisation or a smaller model.")
    return warnings


def dominant_term(records: Sequence[dict], stage: str = "distill") -> str | None:
    """The warning for a term whose weighted gradient on the student, measured by the engine before the stage
    trained (`<stage>:grad_norms`), is more than DOMINANCE times the next term's; None otherwise.

    A dominance the stated weights ask for is not warned about when they ask for less than DOMINANCE and the two
    terms' gradients per unit of weight are within AS_WEIGHTED of each other: Hinton's 0.1·ce + 0.9·kd (kd scaled
    by T²) asks for 9x and measures 8-17x. Weights that ask for more (ce 0.01, kd 5), or a weight copied from
    another setting (AT's 1000 on small maps: 150x ce's gradient), are warned about."""
    record = next((r for r in records if r.get("stage") == f"{stage}:grad_norms"), None)
    norms = (record or {}).get("weighted")
    if not norms or len(norms) < 2:
        return None
    top = max(norms, key=norms.__getitem__)
    runner_up = max((k for k in norms if k != top), key=norms.__getitem__)
    second = norms[runner_up]
    if norms[top] <= DOMINANCE * second or _as_weighted(record.get("weights") or {}, norms, top, runner_up):
        return None
    ratio = f"{norms[top] / second:.0f}x" if second > 0 else "all"
    return (f"the loss term '{top}' dominates the gradient of {stage}: {ratio} the next term's at the start "
            f"({norms[top]:.3g} against {second:.3g}); lower its weight or set weight: auto on it (its gradient is "
            "then sized against the label loss's).")


def _as_weighted(weights: dict, norms: dict, top: str, second: str) -> bool:
    """Whether the gradient ratio of `top` to `second` is, within AS_WEIGHTED, the ratio of their stated weights and
    that ratio is below DOMINANCE."""
    if not weights.get(top) or not weights.get(second) or norms[second] <= 0:
        return False
    if weights[top] / weights[second] >= DOMINANCE:
        return False
    per_weight = (norms[top] / weights[top]) / (norms[second] / weights[second])
    return 1 / AS_WEIGHTED <= per_weight <= AS_WEIGHTED


def significantly_below(first: torch.Tensor | None, second: torch.Tensor | None,
                        target: torch.Tensor) -> tuple[int, int] | None:
    """(samples `first` gets wrong and `second` right, the reverse) when `first`'s predictions are below
    `second`'s beyond the test set's noise: by BELOW_ALONE of the samples and, in a paired sign test on the samples
    where exactly one is right, by SIGN_TEST_SIGMAS standard deviations; None otherwise."""
    if first is None or second is None or not len(target):
        return None
    right_1, right_2 = first.cpu() == target, second.cpu() == target
    losses, wins = int((right_2 & ~right_1).sum()), int((right_1 & ~right_2).sum())
    if (losses - wins) / len(target) < BELOW_ALONE or losses - wins <= SIGN_TEST_SIGMAS * math.sqrt(losses + wins):
        return None
    return losses, wins


LOGIT_TERMS = {"ce", "kd"}  # the terms the student's predictions are judged by


def feature_share(records: Sequence[dict], stage: str = "distill") -> str | None:
    """The likely cause when terms beyond ce / kd (feature, relation, attention) carry most of the measured
    gradient at the start of the stage; None otherwise."""
    norms = next((r["weighted"] for r in records if r.get("stage") == f"{stage}:grad_norms"), None) or {}
    others = {k: v for k, v in norms.items() if k.rsplit("_", 1)[0] not in LOGIT_TERMS and k not in LOGIT_TERMS}
    logits = sum(v for k, v in norms.items() if k not in others)
    if not others or sum(others.values()) <= logits:
        return None
    return (f"the terms beyond ce / kd ({', '.join(sorted(others))}) carry most of the gradient; give them a "
            "smaller ratio (weight: auto, ratio: 0.3) or leave them out")


def below_alone(results: dict, causes: Sequence[str], predicted: dict[str, torch.Tensor],
                target: torch.Tensor) -> str | None:
    """The warning for a distilled student significantly below the same student alone, with the likely causes
    named; None otherwise."""
    lost = significantly_below(predicted.get("student"), predicted.get("alone"), target)
    if lost is None:
        return None
    losses, wins = lost
    models = results.get("models", {})
    named = "; ".join(causes) if causes else ("the capacity gap or the temperature: try a student closer to the "
                                              "teacher's size, another kd temperature or more weight on ce")
    return (f"the distilled student ({models['student']['top1']:.1%}) is below the same student trained alone "
            f"({models['alone']['top1']:.1%}; {losses} test samples lost, {wins} won); likely cause: {named}. "
            "`distil run --seeds 3` gives the verdict over seeds.")


def after_evaluation(run: RunContext, models: dict[str, nn.Module], results: dict,
                     predicted: dict[str, torch.Tensor]) -> list[str]:
    """Warnings once every model is measured on test (see the module docstring)."""
    records = run.log.records()
    target = targets_of(run.splits.test)
    warnings: list[str] = []
    causes: list[str] = []
    if "teacher" in models and "student" in models:
        size = larger_student(parameters(models["teacher"]), parameters(models["student"]))
        if size:
            causes.append("capacity (the student is larger than the teacher)")
            if size not in run.warnings:  # not counted before training (a checkpoint, python: or text model)
                warnings.append(size)
    teacher = results.get("models", {}).get("teacher")
    if teacher is not None:
        found = teacher_checks(teacher, predicted.get("teacher"), target)
        warnings += found
        if found:
            causes.append("the teacher (near one class)")
        alone = results["models"].get("alone", {}).get("top1")
        if significantly_below(predicted.get("teacher"), predicted.get("alone"), target) is not None:
            warnings.append(f"the teacher ({teacher['top1']:.1%}) is below the student trained alone "
                            f"({alone:.1%}): it has nothing to teach; train it longer or choose a stronger one.")
            causes.append("the teacher (below the student alone)")
    warnings += chance_checks(results, train_accuracies(records), target)
    dominant = dominant_term(records)
    if dominant:
        warnings.append(dominant)
        causes.append("scale (one loss term swamps the others)")
    elif (feature := feature_share(records)) is not None:
        causes.append(feature)
    late = below_alone(results, causes, predicted, target)
    if late:
        warnings.append(late)
    return warnings


def speak(run: RunContext, warnings: Sequence[str]) -> None:
    """Log each warning and keep it for the report."""
    for warning in warnings:
        log.warning("distil: %s", warning)
        run.warnings.append(warning)
