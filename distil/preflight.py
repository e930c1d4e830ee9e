"""Checks a run makes before it trains anything: every model the recipe names fits in memory, and every model file
it names loads (as data), so a mistake in the student does not surface only after the teacher has trained."""

from __future__ import annotations

import os
from pathlib import Path

import torch

from distil import checkpoint
from distil.data import Splits
from distil.errors import DistilError
from distil.models import build_model
from distil.models.zoo import lookup
from distil.recipe import ModelConfig, Recipe

BYTES_PER_PARAMETER = 16  # fp32 weights, gradients and two AdamW moments


def memory_bytes(device: torch.device) -> int:
    """The memory training on `device` can use at most: the GPU's total memory, else the machine's RAM."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # not a POSIX system: no limit known
        return 2**63


def parameter_count(cfg: ModelConfig, splits: Splits) -> int:
    """The parameters of a zoo model for this data, counted on the meta device (nothing is allocated)."""
    with torch.device("meta"):
        model = build_model(cfg, splits.input_shape, splits.num_classes)
    return sum(p.numel() for p in model.parameters())


def check_size(cfg: ModelConfig, splits: Splits, field: str, device: torch.device) -> None:
    """DistilError naming `field` when training the model would need more memory than `device` has (zoo models;
    text models, `hf:` folders and `python:` factories are not built before training)."""
    if lookup(cfg.name.lower()) is None:
        return
    count = parameter_count(cfg, splits)
    need, have = count * BYTES_PER_PARAMETER, memory_bytes(device)
    if need > have:
        raise DistilError(f"{field}: '{cfg.name}' has {count:,} parameters, which need about {need / 2**30:,.0f} GiB "
                          f"to train (weights, gradients, optimizer state), more than the {have / 2**30:,.0f} GiB "
                          f"of {device.type}; make it smaller ({field}.hidden / {field}.channels).")


def models_of(recipe: Recipe) -> list[tuple[str, ModelConfig]]:
    """Every model the recipe trains or loads, with the field that names it."""
    found: list[tuple[str, ModelConfig]] = [("teacher", recipe.teacher), ("student", recipe.student)]
    found += [(f"distill.teachers.{i}", member) for i, member in enumerate(recipe.distill.teachers)]
    return found


def check_models(recipe: Recipe, splits: Splits, device: torch.device) -> None:
    """Load every model file and size every zoo model the recipe names, before anything trains."""
    for field, cfg in models_of(recipe):
        path = getattr(cfg, "checkpoint", None) or (cfg.name.removeprefix("checkpoint:")
                                                   if cfg.name.startswith("checkpoint:") else None)
        if path is not None:
            checkpoint.read_model_file(Path(path))  # a missing, damaged or code-carrying file fails here
        else:
            check_size(cfg, splits, field, device)
