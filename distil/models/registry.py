"""Model builders other packages register (text's students, `hf:` folders), so the zoo never imports them: a name
the zoo does not hold is looked up here, with the model plugins (distil.plugins) loaded on the first miss."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from distil import plugins
from distil.recipe import ModelConfig

Builder = Callable[[ModelConfig, tuple[int, ...], int], nn.Module]
_NAMED: dict[str, tuple[Builder, str]] = {}
_PREFIXED: dict[str, tuple[Builder, str, str]] = {}


def register_builder(name: str, build: Builder, line: str) -> None:
    """Make `build(cfg, input_shape, num_classes)` the model of `name`; `line` describes it in `distil models`."""
    _NAMED[name] = (build, line)


def register_prefix(prefix: str, build: Builder, shown: str, line: str) -> None:
    """Build every model named `<prefix>...` with `build`; `shown` and `line` describe it in `distil models`."""
    _PREFIXED[prefix] = (build, shown, line)


def registered_builder(name: str) -> Builder | None:
    """The registered builder for `name` (by prefix, then by name), loading the plugins if need be; else None."""
    for attempt in range(2):
        for prefix, (build, _, _) in _PREFIXED.items():
            if name.startswith(prefix):
                return build
        if name in _NAMED:
            return _NAMED[name][0]
        if attempt == 0:
            plugins.load("models")
    return None


def registered_lines() -> list[tuple[str, str]]:
    """(name as shown, description) of every registered builder, prefixes first, for `distil models`."""
    plugins.load("models")
    return [(shown, line) for _, shown, line in _PREFIXED.values()] + [(n, line) for n, (_, line) in _NAMED.items()]
