"""Post-training int8 quantization with PyTorch's own tooling (CPU kernels).

- dynamic: `torch.ao.quantization.quantize_dynamic` on Linear / LSTM (weights int8, activations quantized per batch);
- static: FX graph mode (`prepare_fx` → calibration → `convert_fx`) with the backend's default qconfig, fusing
  conv-bn-relu; the observers see a seeded subset of the training split.

torch 2.13 no longer ships the PT2E flow (it moved to torchao) and marks these APIs deprecated; they still run and
are the supported in-tree path, so their deprecation warnings are silenced here.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from distil.errors import DistilError

DYNAMIC_TYPES = (nn.Linear, nn.LSTM)
CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@contextmanager
def _quiet_ao() -> Iterator[None]:
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"torch\.ao\.quantization is deprecated")
        warnings.filterwarnings("ignore", message=r"Please use quant_min and quant_max")
        warnings.filterwarnings("ignore", message=r"must run observer before calling calculate_qparams")
        warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor, torch\.quantize_per_channel")
        yield


def resolve_mode(mode: str, model: nn.Module) -> str:
    """`auto` means static for models with convolutions, dynamic otherwise."""
    if mode != "auto":
        return mode
    return "static" if any(isinstance(m, CONV_TYPES) for m in model.modules()) else "dynamic"


def use_backend(backend: str) -> None:
    """Select the quantized engine the int8 kernels run on (a process-wide torch setting)."""
    if backend not in torch.backends.quantized.supported_engines:
        engines = ", ".join(e for e in torch.backends.quantized.supported_engines if e != "none")
        raise DistilError(f"compress.quantize.backend: '{backend}' is not available in this PyTorch build; "
                          f"use one of {engines}.")
    torch.backends.quantized.engine = backend


def _structure(model: nn.Module, mode: str, backend: str, example: torch.Tensor) -> nn.Module:
    """A CPU copy of `model` prepared for `mode` (dynamic: already converted; static: observers inserted)."""
    use_backend(backend)
    model = copy.deepcopy(model).cpu().eval()
    with _quiet_ao():
        if mode == "dynamic":
            if not any(isinstance(m, DYNAMIC_TYPES) for m in model.modules()):
                raise DistilError("compress.quantize.mode dynamic: the model has no Linear or LSTM layer to "
                                  "quantize; use mode: static.")
            return torch.ao.quantization.quantize_dynamic(model, set(DYNAMIC_TYPES), dtype=torch.qint8)
        from torch.ao.quantization import get_default_qconfig_mapping
        from torch.ao.quantization.quantize_fx import prepare_fx

        try:
            return prepare_fx(model, get_default_qconfig_mapping(backend), example_inputs=(example.cpu(),))
        except Exception as exc:  # torch.fx raises many types on data-dependent control flow
            raise DistilError(f"compress.quantize.mode static: FX graph mode could not trace "
                              f"{type(model).__name__} ({type(exc).__name__}); use mode: dynamic.") from None


def _convert(prepared: nn.Module) -> nn.Module:
    from torch.ao.quantization.quantize_fx import convert_fx

    with _quiet_ao():
        return convert_fx(prepared)


@torch.no_grad()
def quantize(model: nn.Module, mode: str, backend: str, calibration: torch.Tensor) -> nn.Module:
    """An int8 copy of `model` on the CPU; static mode calibrates on `calibration` (a batch of training inputs)."""
    prepared = _structure(model, mode, backend, calibration[:1])
    if mode == "dynamic":
        return prepared
    for chunk in calibration.cpu().split(256):
        prepared(chunk)
    return _convert(prepared)


def rebuild(model: nn.Module, mode: str, backend: str, example: torch.Tensor) -> nn.Module:
    """The int8 structure of `model` without calibration, for loading a saved quantized state dict into."""
    prepared = _structure(model, mode, backend, example)
    return prepared if mode == "dynamic" else _convert(prepared)
