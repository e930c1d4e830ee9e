"""How a strategy trains one model with the engine; the code lives in distil.context (re-exported here)."""

from distil.context import Trainer, Transform, score

__all__ = ["Trainer", "Transform", "score"]
