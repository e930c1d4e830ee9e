"""The HTTP inference server (FastAPI + uvicorn): a run's exported ONNX model or a PyTorch model file.

`POST /predict` takes `{"inputs": [x1, x2, ...]}`, each x a nested array of numbers shaped like one training
input and preprocessed the way training saw it (the statistics are in `GET /metadata`); it answers the class,
its name and the probabilities of every input. Bad requests get a 4xx whose `detail` says what was expected.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from distil.compress.stage import run_folder_of, sha256_of
from distil.errors import DistilError
from distil.recipe import ServeConfig

BACKENDS = ("auto", "onnx", "torch")


@dataclass
class Served:
    """A loaded model and what a client needs to know to call it."""

    path: Path
    backend: str
    forward: Callable[[np.ndarray], np.ndarray]
    input: dict
    class_names: list[str]
    role: str
    metrics: dict
    sha256: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        """The shape of one input (no batch axis)."""
        return tuple(self.input["shape"])


def resolve_model(target: Path, backend: str = "auto") -> Path:
    """The model file `target` names: itself, or a run folder's ONNX export (else its shipped PyTorch model)."""
    target = Path(target)
    if backend not in BACKENDS:
        raise DistilError(f"--backend: '{backend}' is not a backend; use {', '.join(BACKENDS)}.")
    if target.is_file():
        kind = "onnx" if target.suffix == ".onnx" else "torch"
        if backend not in ("auto", kind):
            raise DistilError(f"{target} is a {kind} model but --backend {backend} was asked; drop --backend or "
                              "give a matching file.")
        return target
    if not target.is_dir():
        raise DistilError(f"{target} does not exist; give a run folder (runs/<name>) or a model file.")
    models = target / "models"
    onnx = models / "student.onnx"
    if backend in ("auto", "onnx") and onnx.is_file():
        return onnx
    if backend == "onnx":
        raise DistilError(f"{onnx} does not exist; export it first with `distil export {target}`.")
    for name in ("student-pruned.pt", "student.pt"):
        if (models / name).is_file():
            return models / name
    raise DistilError(f"{target} has no models/student.onnx or models/student.pt; finish the run first.")


def _metrics(path: Path, role: str, source: str | None) -> dict:
    """The test metrics results.json holds for this model (or for the fp32 model it was exported from)."""
    folder = run_folder_of(path)
    if folder is None or not (folder / "results.json").is_file():
        return {}
    models = json.loads((folder / "results.json").read_text(encoding="utf-8")).get("models", {})
    key = role if role in models else source if source in models else None
    if key is None:
        return {}
    row = {k: v for k, v in models[key].items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    return {"of": models[key]["label"], **row}


def load_served(target: Path, backend: str = "auto") -> Served:
    """Load the model `target` names for serving, with its input description, class names and metrics."""
    path = resolve_model(target, backend)
    if path.suffix == ".onnx":
        from distil.compress.onnx_export import OnnxModel

        model = OnnxModel(path)
        meta = model.metadata
        if "input" not in meta:
            raise DistilError(f"{path} has no distil metadata (input shape, classes); serve an ONNX file written by "
                              "`distil export`.")
        role, source = meta["extra"].get("role", "onnx"), meta["extra"].get("source")
        return Served(path, "onnx", model.run, meta["input"], meta["class_names"], role,
                      _metrics(path, role, source), sha256_of(path))
    import torch

    from distil.compress.files import load_any

    model, meta = load_any(path)
    folder = run_folder_of(path)
    spec: dict = {"shape": list(meta["input_shape"]), "dtype": "float32",
                  "preprocessing": "as the model was trained (no recipe.yaml beside the model file says how)"}
    if folder is not None:
        from distil.card import input_spec
        from distil.recipe import load_recipe

        spec = input_spec(load_recipe(folder / "recipe.yaml").data, tuple(meta["input_shape"]))

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).float().numpy()

    role = meta.get("extra", {}).get("role", "student")
    return Served(path, "torch", forward, spec, meta["class_names"], role, _metrics(path, role, None),
                  sha256_of(path))


def serve_config(target: Path, **overrides: object) -> ServeConfig:
    """The run's `serve` section (defaults for a bare model file) with the command line's non-None options on top."""
    from distil.recipe import load_recipe

    target = Path(target)
    folder = target if target.is_dir() else run_folder_of(target)
    recipe_path = folder / "recipe.yaml" if folder is not None else None
    base = load_recipe(recipe_path).serve if recipe_path is not None and recipe_path.is_file() else ServeConfig()
    values = {**base.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return ServeConfig.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise DistilError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}.") from None


class BadRequest(Exception):
    """A request the server refuses: its HTTP status and what was expected."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


def parse_inputs(payload: object, shape: tuple[int, ...], max_batch: int) -> np.ndarray:
    """The request's inputs as a float32 batch, or BadRequest saying what the body should have been."""
    expected = (f'a JSON object {{"inputs": [...]}} holding 1 to {max_batch} inputs, each an array of numbers '
                f"shaped {list(shape)}")
    if not isinstance(payload, dict) or "inputs" not in payload:
        raise BadRequest(422, f"expected {expected}.")
    unknown = sorted(set(payload) - {"inputs"})
    if unknown:
        raise BadRequest(422, f"unknown field(s) {unknown}; expected {expected}.")
    inputs = payload["inputs"]
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest(422, f"'inputs' must be a non-empty array; expected {expected}.")
    if len(inputs) > max_batch:
        raise BadRequest(413, f"a batch of {len(inputs)} inputs is over this server's limit of {max_batch}; "
                              "split it into smaller requests.")
    try:
        array = np.asarray(inputs)
    except (ValueError, TypeError):
        raise BadRequest(422, f"'inputs' is not a rectangular array; expected {expected}.") from None
    if array.dtype.kind not in "iuf":
        raise BadRequest(422, f"'inputs' must hold only numbers (found strings, booleans, nulls or objects); "
                              f"expected {expected}.")
    if array.shape[1:] != tuple(shape):
        raise BadRequest(422, f"each input must be shaped {list(shape)}, got {list(array.shape[1:])}; "
                              f"expected {expected}.")
    with np.errstate(over="ignore"):
        array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise BadRequest(422, "'inputs' holds NaN, infinity or numbers beyond float32's range; send finite numbers.")
    return array


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, computed stably in float64."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def create_app(served: Served, max_batch: int, max_body_bytes: int) -> FastAPI:
    """The FastAPI application: POST /predict, GET /health, GET /metadata."""
    app = FastAPI(title="distil model server", docs_url=None, redoc_url=None, openapi_url=None)
    names = list(served.class_names)
    metadata = {
        "model": served.path.name, "format": served.backend, "role": served.role, "sha256": served.sha256,
        "input": served.input, "num_classes": len(names), "class_names": names, "metrics": served.metrics,
        "request": {"method": "POST", "path": "/predict", "body": '{"inputs": [x1, x2, ...]}',
                    "max_batch": max_batch, "max_body_bytes": max_body_bytes},
    }

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status)

    @app.exception_handler(Exception)
    async def failed(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"inference failed ({type(exc).__name__}); the server keeps serving."},
                            status_code=500)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/metadata")
    async def get_metadata() -> dict:
        return metadata

    @app.post("/predict")
    async def predict(request: Request) -> dict:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body_bytes:
            raise BadRequest(413, f"the body has {int(declared)} bytes, over this server's limit of "
                                  f"{max_body_bytes}; send fewer inputs per request.")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body_bytes:
                raise BadRequest(413, f"the body is over this server's limit of {max_body_bytes} bytes; send "
                                      "fewer inputs per request.")
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):
            raise BadRequest(400, 'the body is not valid JSON; send a JSON object {"inputs": [...]}.') from None
        x = parse_inputs(payload, served.input_shape, max_batch)
        probabilities = softmax(await run_in_threadpool(served.forward, x))
        classes = probabilities.argmax(axis=1)
        return {"classes": classes.tolist(), "labels": [names[c] for c in classes],
                "probabilities": probabilities.tolist(), "class_names": names}

    return app


def serve(target: Path, *, backend: str = "auto", host: str | None = None, port: int | None = None,
          max_batch: int | None = None, max_body_bytes: int | None = None) -> None:
    """Load the model and serve it with uvicorn until interrupted (127.0.0.1 unless `host` says otherwise)."""
    import uvicorn

    cfg = serve_config(target, host=host, port=port, max_batch=max_batch, max_body_bytes=max_body_bytes)
    served = load_served(target, backend)
    app = create_app(served, cfg.max_batch, cfg.max_body_bytes)
    print(f"distil: serving {served.path} ({served.backend}) on http://{cfg.host}:{cfg.port} "
          "(POST /predict, GET /metadata, GET /health)", flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False)
