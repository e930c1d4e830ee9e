"""`distil init`: a starter recipe for a dataset, every section written out with the schema's own comments.

The text is generated from the recipe schema (field descriptions, allowed values, section docstrings), so it stays
true as the schema grows; optional sections that are off by default are written commented out, ready to enable.
"""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ValidationError

from distil.checkpoint import atomic_write_text
from distil.data.registry import split_loader
from distil.errors import DistilError
from distil.recipe import Recipe, builtin_recipe_path, validate_recipe

TEXT_RECIPE = "rotten_tomatoes.yaml"  # the shipped text recipe: its hf: teacher and text student suit any text data
LOSS_HELP = ("each term: name (see `distil methods`), weight (a number or auto) and the method's parameters; "
             "optional ratio, schedule, sample_weight")


def _shipped(name: str) -> dict | None:
    """The raw shipped recipe `name`, or None when there is none."""
    path = builtin_recipe_path(name)
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.is_file() else None


def starter_recipe(dataset: str, path: str | None = None) -> Recipe:
    """The recipe `distil init` writes for `dataset`: the shipped recipe of that dataset when there is one, the
    shipped text recipe's models for other text datasets, else the schema's defaults; `path` is data.path."""
    text = split_loader(dataset) is not None  # text datasets build their own splits
    raw = _shipped(f"{dataset}.yaml")
    if raw is None or (raw.get("data") or {}).get("name") != dataset:
        raw = _shipped(TEXT_RECIPE) if text else {}
        raw["data"] = {**({"text": raw["data"].get("text", {})} if text else {}), "name": dataset}
        raw["name"] = f"{dataset}-kd"
    if path is not None:
        raw["data"]["path"] = path
    return validate_recipe(raw, f"distil init {dataset}")


def _scalar(value: Any) -> str:
    """A value as one line of YAML (flow style for lists and mappings)."""
    text = yaml.safe_dump(value, default_flow_style=True, width=10_000, sort_keys=False).strip()
    return text.removesuffix("\n...").strip()


def _section_class(annotation: Any) -> type[BaseModel] | None:
    """The config section an Optional annotation holds, if any (None for lists and plain values)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                return arg
    return None


def _help(field: Any) -> str:
    """The comment of a field: its description, and the allowed values of a Literal."""
    parts = [field.description] if field.description else []
    annotation = field.annotation
    if typing.get_origin(annotation) is list:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) is Literal:
        parts.append("one of " + ", ".join(map(str, typing.get_args(annotation))))
    else:
        choices = [a for arg in typing.get_args(annotation) if typing.get_origin(arg) is Literal
                   for a in typing.get_args(arg)]
        if choices:
            parts.append("or " + ", ".join(map(str, choices)))
    return "; ".join(parts)


def _line(indent: str, key: str, value: str | None, comment: str, off: bool) -> str:
    text = f"{indent}{'# ' if off else ''}{key}:{'' if value is None else ' ' + value}"
    return f"{text}  # {comment}" if comment else text


def _doc(cls: type) -> str:
    return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


def _lines(section: BaseModel, indent: str, off: bool) -> list[str]:
    """The fields of a section, one per line with their comments; nested sections indented under their key."""
    out = []
    for name, field in type(section).model_fields.items():
        value = getattr(section, name)
        comment = _help(field)
        if isinstance(value, BaseModel):
            out.append(_line(indent, name, None, comment or _doc(type(value)), off))
            out += _lines(value, indent + "  ", off)
        elif value is None and (cls := _section_class(field.annotation)) is not None:
            out += _disabled(indent, name, cls, f"off; {comment or _doc(cls)}", off)
        elif isinstance(value, list) and value and isinstance(value[0], BaseModel):
            out.append(_line(indent, name, None, LOSS_HELP if name == "losses" else comment, off))
            out += [f"{indent}{'# ' if off else ''}  - {_scalar(item.model_dump(mode='json'))}" for item in value]
        else:
            dumped = section.model_dump(mode="json", include={name})[name]
            out.append(_line(indent, name, _scalar(dumped), comment, off))
    return out


def _disabled(indent: str, name: str, cls: type[BaseModel], note: str, off: bool) -> list[str]:
    """An optional section that is off: its defaults commented out, or one line when it has required fields."""
    try:
        defaults = cls()
    except ValidationError:
        return [_line(indent, name, "null", note, off)]
    return [_line(indent, name, None, note, True), *_lines(defaults, indent + "  ", True)]


def render_starter(recipe: Recipe, header: str) -> str:
    """The recipe as commented YAML: a header, then every top-level section with its fields."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    for name, field in Recipe.model_fields.items():
        value = getattr(recipe, name)
        lines.append("")
        if isinstance(value, BaseModel):
            lines.append(f"# {_doc(type(value))}")
            lines.append(f"{name}:")
            lines += _lines(value, "  ", False)
        elif value is None and (cls := _section_class(field.annotation)) is not None:
            lines += _disabled("", name, cls, f"off (uncomment to enable): {_doc(cls)}", False)
        else:
            lines.append(_line("", name, _scalar(recipe.model_dump(mode="json", include={name})[name]),
                               _help(field), False))
    return "\n".join(lines) + "\n"


def write_starter(recipe: Recipe, header: str, out: Path, force: bool) -> Path:
    """Write the starter recipe to `out` atomically; an existing file is kept unless `force`."""
    if out.exists() and not force:
        raise DistilError(f"{out} already exists; pass --force to replace it or --out to write another file.")
    atomic_write_text(out, render_starter(recipe, header))
    return out
