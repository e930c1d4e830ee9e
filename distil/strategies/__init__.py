"""Strategies arrange teachers, students and data, then call the one engine."""

from distil.strategies.augment_distill import Adversarial, CutMix, Mixup
from distil.strategies.continual import ContinualResult, learn_without_forgetting
from distil.strategies.multi_teacher import Ensemble, EnsembleTeacher
from distil.strategies.offline import DistillResult, distill
from distil.strategies.online import MutualResult, mutual_learning
from distil.strategies.schedules import Scheduled
from distil.strategies.self_distill import GenerationsResult, born_again
from distil.strategies.terms import SampleWeighted
from distil.strategies.transfer_set import distill_unlabeled

__all__ = ["Adversarial", "ContinualResult", "CutMix", "DistillResult", "Ensemble", "EnsembleTeacher",
           "GenerationsResult", "Mixup", "MutualResult", "SampleWeighted", "Scheduled", "born_again", "distill",
           "distill_unlabeled", "learn_without_forgetting", "mutual_learning"]
