"""The model zoo: build a model by name (`resnet20`, `wrn_40_2`, ...) or from the user's code (`python:mod:fn`)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from distil.errors import DistilError, nearest
from distil.models.registry import registered_builder
from distil.models.user import PREFIX as PYTHON_PREFIX
from distil.models.user import build_python_model
from distil.models.zoo import ZOO, lookup
from distil.recipe import ModelConfig

__all__ = ["available_models", "build_model", "describe_models", "zoo_rows"]


def available_models() -> list[str]:
    """The zoo's model names, sorted (any `wrn_<depth>_<width>` with depth 6n+4 is accepted too)."""
    return sorted(ZOO)


def describe_models() -> dict[str, str]:
    """Each zoo name with a one-line description, sorted by name, for `distil models`."""
    return {name: ZOO[name].description for name in available_models()}


@dataclass(frozen=True)
class ZooRow:
    """One line of `distil models`: a zoo model, its size for the asked input shape (or why it cannot take it)."""

    name: str
    parameters: int | None
    options: tuple[str, ...]
    description: str
    problem: str = ""


def zoo_rows(input_shape: tuple[int, ...], num_classes: int) -> list[ZooRow]:
    """Every zoo model (and `soft_tree`) built with its default options for `input_shape` and `num_classes`."""
    rows = []
    for name in [*available_models(), "soft_tree"]:
        entry = lookup(name)
        try:
            model = build_model(ModelConfig(name=name), input_shape, num_classes)
        except DistilError as exc:
            rows.append(ZooRow(name, None, entry.options, entry.description, str(exc)))
            continue
        rows.append(ZooRow(name, sum(p.numel() for p in model.parameters()), entry.options, entry.description))
    return rows


def _check_shape(name: str, input_shape: tuple[int, ...], num_classes: int) -> None:
    if not input_shape or any(not isinstance(side, int) or side < 1 for side in input_shape):
        raise DistilError(f"model '{name}': input shape {tuple(input_shape)} must be one or more positive sizes.")
    if num_classes < 1:
        raise DistilError(f"model '{name}': num_classes must be at least 1, got {num_classes}.")


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """A freshly initialised model for inputs of `input_shape` (no batch axis) that returns (B, num_classes) logits."""
    name = cfg.name
    input_shape = tuple(input_shape)
    _check_shape(name, input_shape, num_classes)
    if name.startswith("checkpoint:"):
        raise DistilError(
            f"model '{name}': checkpoint models are loaded by distil.checkpoint, not built from the zoo; "
            "load it with distil.checkpoint instead."
        )
    if name.startswith(PYTHON_PREFIX):
        return build_python_model(name, input_shape, num_classes)
    entry = lookup(name.lower())
    if entry is None and (build := registered_builder(name)) is not None:  # text's students, hf: folders
        return build(cfg, input_shape, num_classes)
    if entry is None:
        raise DistilError(
            f"unknown model '{name}'{nearest(name, available_models())}; see `distil models` for the list."
        )
    return entry.build(cfg, input_shape, num_classes)
