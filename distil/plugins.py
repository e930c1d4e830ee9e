"""Parts that register themselves into the core's registries (text's datasets and losses, ...), so the core never
imports them: a registry asked for a name it does not hold, or for its whole list, loads the plugins of its kind
first. Each kind lists its module names here; installed packages may add more under the entry-point group
`distil.<kind>` (e.g. `distil.methods`)."""

from __future__ import annotations

import importlib
import importlib.metadata

PLUGINS: dict[str, tuple[str, ...]] = {
    "methods": ("distil.text.layers", "distil.text.lm_losses", "distil.tabular.losses"),
    "datasets": ("distil.text.datasets",),
    "models": ("distil.text.models", "distil.tabular.models"),
}
_loaded: set[str] = set()


def load(kind: str) -> None:
    """Import every registrant of `kind` not imported yet (once per process)."""
    names = list(PLUGINS.get(kind, ()))
    names += [ep.value for ep in importlib.metadata.entry_points(group=f"distil.{kind}")]
    for name in names:
        if name not in _loaded:
            _loaded.add(name)
            importlib.import_module(name)
