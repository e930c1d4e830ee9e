"""ONNX export of a tabular student: the graph takes encoded rows (float32, serving-time fields only); the encoders
(vocabularies, training statistics) stay outside it, in encoders.json and in the file's metadata, applied by
`encode_records` (or `distil serve`, which reads them from the file) before the call.
"""

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

from distil.checkpoint import atomic_write_bytes
from distil.engine import predict
from distil.errors import DistilError
from distil.tabular.data import TabularSplits

ATOL = 1e-4
METADATA_KEY = "distil"  # the metadata property distil.compress.onnx_export.OnnxModel (and distil serve) reads


def export_student(model: nn.Module, splits: TabularSplits, path: Path, metadata: dict) -> dict:
    """Write the student as ONNX with a dynamic batch axis and the model file's `metadata` (with the encoders, so
    `distil serve` of the .onnx takes raw records too), check it against PyTorch on the test rows, report both."""
    import onnxruntime as ort

    width = splits.encoders.width(teacher=False)
    rows = splits.test.x[:, :width].contiguous()
    model = copy.deepcopy(model).cpu().eval()
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = torch.onnx.export(model, (rows[:2],), dynamo=True, input_names=["rows"],
                                        output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},),
                                        opset_version=18, verbose=False)
    except Exception as exc:  # the exporter raises many types
        raise DistilError(f"tabular.export: torch.onnx could not export the student ({type(exc).__name__}); set "
                          "tabular.export: false.") from None
    finally:
        logger.setLevel(level)
    proto = program.model_proto  # a new proto on each access: keep one
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata)
    trial = path.with_name(f".{path.name}.unchecked")
    atomic_write_bytes(trial, proto.SerializeToString())
    session = ort.InferenceSession(str(trial), providers=["CPUExecutionProvider"])
    got = session.run(None, {"rows": rows.numpy().astype(np.float32)})[0]
    want = predict(model, splits.test, torch.device("cpu")).numpy()
    diff = float(np.abs(got - want).max()) if len(want) else 0.0
    if diff > ATOL + 1e-3 * float(np.abs(want).max(initial=0.0)):
        trial.unlink(missing_ok=True)
        raise DistilError(f"tabular.export: the ONNX student differs from PyTorch by {diff:.3g}; set "
                          "tabular.export: false.")
    os.replace(trial, path)
    return {"path": str(path), "max_abs_diff": diff, "samples": len(want), "input_width": width}
