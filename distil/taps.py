"""Forward hooks that capture a model's intermediate features by module path, without changing the model.

A tap names a module the way `model.named_modules()` does (`layer3.1.conv2`) and captures what it returns, or,
written `layer3.1.conv2:input`, what it receives. `.` is the model itself (its output; `.:input` its input) and
`@embedding` is the input of the model's last Linear layer: the pooled features its classifier reads. Features are
plain tensors keyed by the tap as written, so a teacher cache can store them and a loss can find them again.
Hooks exist only while a `Taps` is entered (`with taps: model(x)`); a model without taps runs untouched.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from torch import Tensor, nn

from distil.errors import DistilError, nearest

EMBEDDING = "@embedding"
INPUT = ":input"


def split_tap(tap: str) -> tuple[str, bool]:
    """(module path, whether the module's input is captured) of a tap such as `layer2.0:input`."""
    if tap.endswith(INPUT):
        return tap[: -len(INPUT)] or ".", True
    return tap, False


def last_linear(model: nn.Module) -> str | None:
    """The path of the last nn.Linear registered in `model` (its classifier, for the zoo's models), or None."""
    names = [name for name, module in model.named_modules() if isinstance(module, nn.Linear)]
    return names[-1] if names else None


def resolve(model: nn.Module, tap: str, role: str = "model", field: str = "taps") -> tuple[nn.Module, bool]:
    """The module a tap hooks and whether it reads the input; a wrong path is a DistilError with the nearest names."""
    if tap == EMBEDDING:
        linear = last_linear(model)
        if linear is None:
            raise DistilError(f"{field}: '{EMBEDDING}' is the input of the {role}'s last Linear layer, but the {role} "
                              "has none; give a module path instead, e.g. the layer before its classifier.")
        return model.get_submodule(linear), True
    path, reads_input = split_tap(tap)
    if path == ".":
        return model, reads_input
    modules = dict(model.named_modules())
    if path not in modules:
        names = [name for name in modules if name]
        examples = ", ".join(name for name, _ in model.named_children()) or "none"
        raise DistilError(f"{field}: the {role} has no module '{path}'{nearest(path, names, n=5)}; use a name from "
                          f"model.named_modules() (top level: {examples}), '.' for the output or add ':input'.")
    return modules[path], reads_input


def _tensor(value: Any, tap: str, role: str) -> Tensor:
    """The tensor in a module's output or input: itself, an Outputs' logits, or the first tensor of a tuple."""
    if isinstance(value, Tensor):
        return value
    if isinstance(getattr(value, "logits", None), Tensor):
        return value.logits
    if isinstance(value, (tuple, list)):
        for item in value:
            if isinstance(item, Tensor):
                return item
    raise DistilError(f"{role} tap '{tap}': the module gives a {type(value).__name__}, not a tensor; tap a module "
                      "whose output (or ':input') is a tensor.")


class Taps:
    """Captures the features at some taps of a model: `with taps: model(x)`, then `taps.pop()`.

    Every path is checked when the Taps is made (before any training). Hooks are registered on entering and
    removed on leaving; a module called several times in one forward keeps its last call.
    """

    def __init__(self, model: nn.Module, taps: Iterable[str], role: str = "model", field: str = "taps") -> None:
        self.model = model
        self.role = role
        self.targets = {tap: resolve(model, tap, role, field) for tap in sorted(set(taps))}
        self._captured: dict[str, Tensor] = {}
        self._handles: list = []

    @property
    def taps(self) -> list[str]:
        """The taps captured, sorted."""
        return list(self.targets)

    def _hook(self, tap: str, reads_input: bool):
        def capture(module: nn.Module, args: tuple, output: Any) -> None:
            self._captured[tap] = _tensor(args if reads_input else output, tap, self.role)

        return capture

    def __enter__(self) -> Taps:
        if not self._handles:
            self._handles = [module.register_forward_hook(self._hook(tap, reads_input))
                             for tap, (module, reads_input) in self.targets.items()]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def pop(self) -> dict[str, Tensor]:
        """The features the last forward captured (all taps), leaving none behind."""
        captured, self._captured = self._captured, {}
        missing = [tap for tap in self.targets if tap not in captured]
        if missing:
            raise DistilError(f"{self.role} tap '{missing[0]}': the module did not run in the forward pass; tap a "
                              "module the model calls.")
        return captured
