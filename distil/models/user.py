"""Models from the user's own code: `python:package.module:factory`."""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from typing import Any

from torch import nn

from distil.errors import DistilError, nearest

PREFIX = "python:"


def _load_factory(spec: str) -> Callable[..., Any]:
    """Import `package.module` and return its `factory` attribute, or raise DistilError with the fix."""
    target = spec[len(PREFIX) :]
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise DistilError(f"model '{spec}' is not a python: spec; write it as python:package.module:factory.")
    # The CLI's console script does not put the working directory on sys.path; models there should still load.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise DistilError(
                f"model '{spec}': cannot import module '{module_name}'; check its spelling and run distil from "
                "the folder that contains it (or add that folder to PYTHONPATH)."
            ) from None
        raise DistilError(
            f"model '{spec}': module '{module_name}' failed to import because '{exc.name}' is missing; install it."
        ) from None
    except Exception as exc:  # the user's module itself is broken: say where, keep the cause
        raise DistilError(
            f"model '{spec}': importing module '{module_name}' failed ({type(exc).__name__}: {exc}); fix that module."
        ) from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        names = [name for name, value in vars(module).items() if callable(value) and not name.startswith("_")]
        raise DistilError(
            f"model '{spec}': module '{module_name}' has no callable '{attr}'{nearest(attr, names)}; "
            "name a function that returns an nn.Module."
        )
    return factory


def build_python_model(spec: str, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """Call the factory with the `input_shape` / `num_classes` keywords it accepts (none if it takes neither)."""
    factory = _load_factory(spec)
    offered = {"input_shape": tuple(input_shape), "num_classes": num_classes}
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):  # some builtins and C extensions have no signature: call them bare
        return _checked(spec, factory())
    params = signature.parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = {
        key: value
        for key, value in offered.items()
        if takes_any or (key in params and params[key].kind is not inspect.Parameter.POSITIONAL_ONLY)
    }
    try:
        signature.bind(**kwargs)
    except TypeError as exc:
        raise DistilError(
            f"model '{spec}': the factory cannot be called with {sorted(kwargs) or 'no arguments'} ({exc}); "
            "give it input_shape and num_classes keywords, or defaults for its other parameters."
        ) from None
    return _checked(spec, factory(**kwargs))


def _checked(spec: str, model: object) -> nn.Module:
    """The factory's result, if it is an nn.Module."""
    if not isinstance(model, nn.Module):
        raise DistilError(
            f"model '{spec}': the factory returned {type(model).__name__}, not a torch.nn.Module; return the model."
        )
    return model
