"""The preprocessing a model file carries: how raw inputs (image arrays in their natural range, strings, records)
become the tensors the model was trained on.

A dataset loader describes what it applied as a plain-JSON dict, `Splits.preprocess` = {"kind": NAME, ...}; runs
save it in the model file's metadata ("preprocess") and `distil serve` / `distil eval` rebuild it with
`preprocessor(meta)`. Each kind is a class in a small registry (`@register_kind(NAME)`): it names the request field
its inputs arrive in, describes one raw input (with an example that works when pasted), and encodes a list of raw
inputs into one model batch (a float32 array, or a dict of arrays for inputs with several parts such as text).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

import numpy as np

from distil.errors import DistilError

Batch = Any  # np.ndarray (float32, batch first) or dict[str, np.ndarray] of equal batch size
KINDS: dict[str, type[Preprocessor]] = {}
PROVIDERS = {"tokenizer": "distil.text.preprocess", "records": "distil.tabular.records"}  # imported on first use


class InputError(ValueError):
    """A raw input that cannot be encoded; the message says what was expected (a server answers it with a 422)."""


def register_kind(name: str) -> Callable[[type[Preprocessor]], type[Preprocessor]]:
    """Class decorator: make a preprocessing kind available to model files under `name`."""

    def add(cls: type[Preprocessor]) -> type[Preprocessor]:
        KINDS[name] = cls
        cls.kind = name
        return cls

    return add


class Preprocessor:
    """One kind of preprocessing, built from the spec a model file carries and the model's input shape."""

    kind = ""
    field = "inputs"  # the key of the request body that holds the list of raw inputs

    def __init__(self, spec: dict, input_shape: tuple[int, ...]) -> None:
        self.spec, self.input_shape = spec, tuple(input_shape)

    def describe(self) -> dict:
        """What one raw input is, for clients (`GET /metadata` "input")."""
        raise NotImplementedError

    def example(self) -> Any:
        """One raw input that this preprocessing accepts."""
        raise NotImplementedError

    def encode(self, items: list) -> Batch:
        """The model batch of these raw inputs; InputError saying what was expected when one is not accepted."""
        raise NotImplementedError

    def collate(self, batches: list[Batch]) -> Batch:
        """Several encoded batches as one (for micro-batching): concatenated along the batch axis."""
        return np.concatenate(batches) if len(batches) > 1 else batches[0]


def numeric_array(items: list, shape: tuple[int, ...]) -> np.ndarray:
    """`items` as a float64 array of inputs shaped `shape`, or InputError saying what is wrong."""
    try:
        array = np.asarray(items)
    except (ValueError, TypeError):
        raise InputError(f"the inputs are not a rectangular array; send each one shaped {list(shape)}.") from None
    if array.dtype.kind not in "iuf":
        raise InputError(f"the inputs must hold only numbers (found strings, booleans, nulls or objects); send each "
                         f"one as an array of numbers shaped {list(shape)}.")
    if array.shape[1:] != tuple(shape):
        raise InputError(f"each input must be shaped {list(shape)}, got {list(array.shape[1:])}.")
    array = array.astype(np.float64)
    if not np.isfinite(array).all():
        raise InputError("the inputs hold NaN or infinity; send finite numbers.")
    return array


def to_float32(array: np.ndarray) -> np.ndarray:
    """float32 of `array`, or InputError when a value is beyond float32's range."""
    with np.errstate(over="ignore"):
        out = array.astype(np.float32)
    if not np.isfinite(out).all():
        raise InputError("the inputs hold numbers beyond float32's range (about 3.4e38) once preprocessed; send "
                         "values in the range the model was trained on.")
    return out


def _rounded(values: np.ndarray) -> list:
    """Numbers for JSON, rounded to 7 significant digits."""
    return np.vectorize(lambda v: float(f"{v:.7g}"), otypes=[float])(np.asarray(values, dtype=np.float64)).tolist()


@register_kind("identity")
class Identity(Preprocessor):
    """Numeric arrays the model takes as they are (the loader applied nothing, or an older file says nothing)."""

    def describe(self) -> dict:
        """Shape and dtype, and that no preprocessing is applied."""
        return {"kind": self.kind, "shape": list(self.input_shape), "dtype": "float32",
                "preprocessing": self.spec.get("note", "none: each input is given to the model as it is")}

    def example(self) -> Any:
        """The sample the loader recorded, else zeros."""
        example = self.spec.get("example")
        return example if example is not None else np.zeros(self.input_shape).tolist()

    def encode(self, items: list) -> Batch:
        """The inputs as float32."""
        return to_float32(numeric_array(items, self.input_shape))


@register_kind("standardize")
class Standardize(Preprocessor):
    """(x - mean) / std per channel (images, series) or per feature (tables), with the training split's statistics."""

    def __init__(self, spec: dict, input_shape: tuple[int, ...]) -> None:
        super().__init__(spec, input_shape)
        try:
            self.mean = np.asarray(spec["mean"], dtype=np.float64)
            self.std = np.asarray(spec["std"], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise DistilError("model file: its 'standardize' preprocessing lacks numeric mean and std; use an intact "
                              "model file from a run folder.") from None
        if len(input_shape) > 1 or spec.get("per") == "channel":  # (C, ...) samples: one statistic per channel
            self.mean = self.mean.reshape(-1, *([1] * (len(input_shape) - 1)))
            self.std = self.std.reshape(-1, *([1] * (len(input_shape) - 1)))

    def describe(self) -> dict:
        """Shape, the statistics and what the server does with them."""
        per = self.spec.get("per", "feature")
        return {"kind": self.kind, "shape": list(self.input_shape), "dtype": "float32",
                "per": per, "mean": self.spec["mean"], "std": self.spec["std"],
                "preprocessing": f"send raw inputs in their natural range (as the dataset holds them); the server "
                                 f"standardizes each as in training, (x - mean) / std per {per}"}

    def example(self) -> Any:
        """A raw training sample the loader recorded, else the mean."""
        if self.spec.get("example") is not None:
            return self.spec["example"]
        return np.broadcast_to(self.mean, self.input_shape).tolist()

    def encode(self, items: list) -> Batch:
        """Standardized float32 inputs."""
        return to_float32((numeric_array(items, self.input_shape) - self.mean) / self.std)


def standardize_spec(train: np.ndarray, mean: np.ndarray, std: np.ndarray, raw_scale: float = 1.0) -> dict:
    """The "standardize" spec of a loader that standardized with `mean` and `std` (keepdims arrays of the train
    split's statistics), in raw units: the loader had divided the raw values by `raw_scale` (digits 16, pixels
    255), so clients send values as the dataset holds them. Its example is the first raw training sample."""
    per = "feature" if train.ndim == 2 else "channel"
    return {"kind": "standardize", "per": per, "mean": _rounded(mean.ravel() * raw_scale),
            "std": _rounded(std.ravel() * raw_scale),
            "example": _rounded(train[0] * raw_scale) if len(train) else None}


def identity_spec(train: np.ndarray, raw_scale: float = 1.0) -> dict:
    """The spec of a loader that applied nothing but a division by `raw_scale` ("identity" when that is 1, else
    "standardize" with mean 0 and std `raw_scale`); its example is the first raw training sample."""
    if raw_scale == 1.0:
        return {"kind": "identity", "example": _rounded(train[0]) if len(train) else None}
    return standardize_spec(train, np.zeros(1), np.ones(1), raw_scale)


def _older_spec(described: object) -> dict:
    """The spec of a file from an older distil: an ONNX export's "input" statistics, else inputs as they are."""
    if isinstance(described, dict) and "mean" in described and "std" in described:
        return {"kind": "standardize", "per": described.get("per", "feature"), "mean": described["mean"],
                "std": described["std"]}
    return {"kind": "identity", "note": "not recorded in this model file (written by an older distil): send inputs "
                                        "preprocessed as in training"}


def preprocessor(meta: dict) -> Preprocessor:
    """The preprocessing of a model file's metadata (an older file without one: inputs as the model takes them)."""
    spec = meta.get("preprocess") or _older_spec(meta.get("input"))
    kind = spec.get("kind") if isinstance(spec, dict) else None
    if kind not in KINDS and kind in PROVIDERS:
        importlib.import_module(PROVIDERS[kind])  # the module registers its kind
    if kind not in KINDS:
        raise DistilError(f"model file: its preprocessing kind '{kind}' is not one distil knows "
                          f"({', '.join(sorted(KINDS))}); install the distil extra that provides it, or use a model "
                          "file from this distil version.")
    return KINDS[kind](spec, tuple(meta["input_shape"]))
