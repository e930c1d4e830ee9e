"""Optional dependencies: a lean install has torch, numpy, pydantic, PyYAML, typer, tqdm and scikit-learn; the rest
comes with an extra (`pip install 'distil[serve]'`). `require` imports an optional module where it is used and,
when it is missing, raises one DistilError line naming the extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType

from distil.errors import DistilError

# what each extra brings, for the messages and docs/architecture.md (pyproject.toml lists the packages)
EXTRAS = {
    "serve": "the HTTP server (distil serve): fastapi, uvicorn",
    "onnx": "ONNX export and ONNX Runtime (export:, distil export): onnx, onnxscript, onnxruntime",
    "track": "experiment trackers (track:): tensorboard, mlflow-skinny, wandb",
    "sweep": "hyper-parameter sweeps (distil sweep): optuna",
    "report": "plots in report.html, the lr-finder and explain plots: matplotlib",
    "data": "the MNIST-1D dataset (data.name: mnist1d): mnist1d",
    "text": "text models and language models (distil.text): transformers, tokenizers, safetensors",
}


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import `module` (e.g. "optuna", "mlflow.tracking"), or raise DistilError: `purpose` needs `pip install
    'distil[extra]'`."""
    if extra not in EXTRAS:
        raise ValueError(f"unknown extra {extra!r}")
    try:
        return importlib.import_module(module)
    except ImportError:
        raise DistilError(f"{purpose} needs the optional package '{module.split('.')[0]}'; install it with "
                          f"pip install 'distil[{extra}]'.") from None


def available(module: str) -> bool:
    """Whether an optional module can be imported (for features that degrade instead of failing)."""
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True
