"""ONNX export with a dynamic batch dimension, and the ONNX Runtime check that the file computes what PyTorch does."""

from __future__ import annotations

import copy
import json
import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from distil.checkpoint import atomic_write_bytes
from distil.engine import predict
from distil.errors import DistilError
from distil.extras import require
from distil.recipe import ExportConfig

INPUT, OUTPUT, METADATA_KEY = "input", "logits", "distil"


class OnnxModel(nn.Module):
    """An ONNX Runtime session (CPU) behind the nn.Module call convention: float inputs in, logits out."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__()
        ort = require("onnxruntime", "onnx", "running an .onnx model")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable files
            raise DistilError(f"{path} could not be loaded by ONNX Runtime ({type(exc).__name__}); give an .onnx file "
                              "written by `distil export`.") from None
        self.path = Path(path)
        self.input_name = self.session.get_inputs()[0].name
        raw = self.session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        self.metadata: dict = json.loads(raw) if raw else {}

    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits for a float32 batch."""
        return self.session.run(None, {self.input_name: np.ascontiguousarray(x, dtype=np.float32)})[0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits as a tensor on the input's device."""
        return torch.from_numpy(self.run(x.detach().cpu().numpy())).to(x.device)


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: Path, *, opset: int, metadata: dict) -> None:
    """Write `model` (fp32, eval mode) as ONNX with a dynamic batch axis and `metadata` in its properties."""
    for module in ("onnx", "onnxscript"):  # torch.onnx's exporter imports them
        require(module, "onnx", "ONNX export")
    model = copy.deepcopy(model).cpu().eval()
    example = torch.randn(2, *input_shape)  # batch 2: a batch of 1 would be specialised away
    exporter_log = logging.getLogger("torch.onnx")
    level = exporter_log.level
    exporter_log.setLevel(logging.ERROR)  # "torchvision is not installed" and similar notices
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            program = torch.onnx.export(model, (example,), dynamo=True, input_names=[INPUT], output_names=[OUTPUT],
                                        dynamic_shapes=({0: torch.export.Dim("batch", min=1)},),
                                        opset_version=opset, verbose=False)
    except Exception as exc:  # the exporter raises many types for unsupported operators
        first = str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__
        raise DistilError(f"export: torch.onnx could not export {type(model).__name__} ({first}); use a model "
                          "built from standard layers or remove the export section.") from None
    finally:
        exporter_log.setLevel(level)
    proto = program.model_proto
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    atomic_write_bytes(path, proto.SerializeToString())


def check_parity(exported: OnnxModel, model: nn.Module, dataset: Dataset, cfg: ExportConfig) -> dict:
    """Run `dataset` through ONNX Runtime and PyTorch (fp32, CPU); raise DistilError when they disagree beyond `cfg`."""
    cpu = torch.device("cpu")
    reference = predict(copy.deepcopy(model).cpu().float(), dataset, cpu)
    got = predict(exported, dataset, cpu)
    diff = (got - reference).abs()
    excess = float((diff - cfg.atol - cfg.rtol * reference.abs()).max()) if len(diff) else 0.0
    changed = float((got.argmax(-1) != reference.argmax(-1)).float().mean()) if len(diff) else 0.0
    report = {"samples": len(reference), "max_abs_diff": float(diff.max()) if len(diff) else 0.0,
              "top1_changed": changed, "atol": cfg.atol, "rtol": cfg.rtol, "max_top1_change": cfg.max_top1_change}
    if excess > 0:
        raise DistilError(f"export: {exported.path.name} differs from PyTorch by up to {report['max_abs_diff']:.3g} "
                          f"on {len(reference)} test samples, beyond export.atol={cfg.atol:g} + export.rtol="
                          f"{cfg.rtol:g}·|logit|; the export is not faithful, so fix the model's unsupported "
                          "operation or loosen export.atol / export.rtol knowingly.")
    if changed > cfg.max_top1_change:
        raise DistilError(f"export: the top-1 class differs between ONNX Runtime and PyTorch on {changed:.2%} of "
                          f"{len(reference)} test samples, more than export.max_top1_change="
                          f"{cfg.max_top1_change:g}; fix the export or raise export.max_top1_change knowingly.")
    return report


def export_checked(model: nn.Module, input_shape: tuple[int, ...], path: Path, dataset: Dataset, cfg: ExportConfig,
                   metadata: dict) -> dict:
    """Export to a file beside `path`, check it on `dataset`, and move it into place only when the check passes."""
    path = Path(path)
    trial = path.with_name(f".{path.name}.unchecked")
    export_onnx(model, input_shape, trial, opset=cfg.opset, metadata=metadata)
    try:
        report = check_parity(OnnxModel(trial), model, dataset, cfg)
    except BaseException:
        trial.unlink(missing_ok=True)
        raise
    os.replace(trial, path)
    return report
