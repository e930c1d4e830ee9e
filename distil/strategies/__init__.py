"""Strategies arrange teachers, students and data, then call the one engine."""

from distil.strategies.offline import DistillResult, distill

__all__ = ["DistillResult", "distill"]
