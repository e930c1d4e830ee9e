"""`npz`: your own arrays in a NumPy .npz file: x and y, optionally x_test, y_test and class_names."""

from __future__ import annotations

import zipfile

import numpy as np

from distil.data.registry import Arrays, encode_labels, register, require_file
from distil.errors import DistilError
from distil.recipe import DataConfig


@register("npz")
def npz(cfg: DataConfig) -> Arrays:
    """The arrays of the .npz at `data.path`; labels are class indices when `class_names` is given, else any labels."""
    path = require_file(cfg)
    if not zipfile.is_zipfile(path):
        raise DistilError(f"data.path: {path} is not a .npz archive; save the arrays with numpy.savez.")
    try:
        with np.load(path, allow_pickle=False) as loaded:
            arrays = {name: loaded[name] for name in loaded.files}
    except (OSError, ValueError, zipfile.BadZipFile) as exc:
        raise DistilError(f"data.path: {path} cannot be read as .npz ({exc}); save it with numpy.savez.") from None
    missing = [name for name in ("x", "y") if name not in arrays]
    if missing:
        raise DistilError(
            f"data.path: {path} lacks the array(s) {', '.join(missing)} "
            f"(it holds {', '.join(sorted(arrays)) or 'none'}); save the inputs as x and the labels as y."
        )
    for name in ("x", "x_test"):
        if name in arrays and arrays[name].dtype.kind not in "biuf":
            raise DistilError(f"data.path: {path}: array {name} is not numeric ({arrays[name].dtype}); store numbers.")
    y, y_test = arrays["y"].reshape(-1), arrays.get("y_test")
    if "class_names" in arrays:
        class_names = [str(c) for c in arrays["class_names"].reshape(-1)]
        for name, labels in (("y", y), ("y_test", y_test)):
            if labels is not None and labels.dtype.kind not in "iu":
                raise DistilError(
                    f"data.path: {path}: with class_names given, {name} must hold class indices "
                    f"0..{len(class_names) - 1}; store integer labels."
                )
    else:
        both = y if y_test is None else np.concatenate([y, y_test.reshape(-1)])
        codes, class_names = encode_labels(both, f"data.path: {path}")
        y, y_test = codes[: len(y)], None if y_test is None else codes[len(y) :]
    return Arrays(
        x=arrays["x"],
        y=y.astype(np.int64),
        x_test=arrays.get("x_test"),
        y_test=None if y_test is None else y_test.reshape(-1).astype(np.int64),
        class_names=class_names,
    )
