"""The HTTP inference server (FastAPI + uvicorn): a run's exported ONNX model or a PyTorch model file.

`POST /predict` takes JSON `{"inputs": [x1, x2, ...]}` of raw inputs (image arrays in their natural range, raw
strings for text; the field and the form are in `GET /metadata`, with an example body that works when pasted): the
model file's own preprocessing (distil.preprocess) turns them into model inputs. It answers the class, its name
and the probabilities of every input. Bad requests get a short 4xx whose `detail` says what was expected.

Safe to expose: it binds loopback unless `--host` says otherwise on the command line, takes an optional bearer
token, JSON only, reads bodies within a deadline and a size limit (distil.serve_guard), parses and runs inference
off the event loop, refuses non-finite outputs, and micro-batches concurrent requests (distil.serve_batch).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
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
from distil.preprocess import Batch, InputError, Preprocessor, preprocessor
from distil.recipe import ServeConfig
from distil.serve_batch import Direct, MicroBatcher, QueueFull
from distil.serve_guard import Guard, short

BACKENDS = ("auto", "onnx", "torch")
TOKEN_ENV = "DISTIL_SERVE_TOKEN"
FLOAT32_MAX = 3.4e38  # raw numbers beyond it are refused (422)
log = logging.getLogger("distil")


@dataclass
class Served:
    """A loaded model, the preprocessing of its raw inputs and what a client needs to know to call it."""

    path: Path
    backend: str
    forward: Callable[[Batch], np.ndarray]
    preprocess: Preprocessor
    class_names: list[str]
    role: str
    metrics: dict
    sha256: str


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
    """Load the model `target` names for serving, with its preprocessing, class names and metrics."""
    path = resolve_model(target, backend)
    if path.suffix == ".onnx":
        from distil.compress.onnx_export import OnnxModel

        model = OnnxModel(path)
        meta = model.metadata
        if "input_shape" not in meta:
            raise DistilError(f"{path} has no distil metadata (input shape, classes); serve an ONNX file written by "
                              "`distil export`.")
        role, source = meta["extra"].get("role", "onnx"), meta["extra"].get("source")
        return Served(path, "onnx", model.run, preprocessor(meta), meta["class_names"], role,
                      _metrics(path, role, source), sha256_of(path))
    import torch

    from distil.batch import TensorDict
    from distil.compress.files import load_any

    model, meta = load_any(path)

    def forward(x: Batch) -> np.ndarray:
        inputs = TensorDict({k: torch.from_numpy(v) for k, v in x.items()}) if isinstance(x, dict) \
            else torch.from_numpy(x)
        with torch.inference_mode():
            return model(inputs).float().numpy()

    role = meta.get("extra", {}).get("role", "student")
    return Served(path, "torch", forward, preprocessor(meta), meta["class_names"], role,
                  _metrics(path, role, None), sha256_of(path))


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve_config(target: Path, **overrides: object) -> ServeConfig:
    """The run's `serve` section (defaults for a bare model file) with the command line's non-None options on top.

    A recipe's `serve.host` beyond loopback is ignored with a warning: only `--host` on the command line binds there.
    """
    from distil.recipe import load_recipe

    target = Path(target)
    folder = target if target.is_dir() else run_folder_of(target)
    recipe_path = folder / "recipe.yaml" if folder is not None else None
    base = load_recipe(recipe_path).serve if recipe_path is not None and recipe_path.is_file() else ServeConfig()
    if not is_loopback(base.host):
        log.warning("distil: serve.host '%s' of %s is ignored: binding beyond loopback needs --host on the command "
                    "line; binding 127.0.0.1.", base.host, recipe_path)
        base = base.model_copy(update={"host": ServeConfig().host})
    values = {**base.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
    try:
        return ServeConfig.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise DistilError(f"--{str(err['loc'][0]).replace('_', '-')}: {err['msg']}.") from None


class BadRequest(Exception):
    """A request the server refuses: its HTTP status and what was expected."""

    def __init__(self, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.headers = status, short(detail), headers


def _names(keys: list[str], most: int = 5) -> str:
    """A few of `keys`, each cut short, and how many more (error messages never echo a whole request)."""
    shown = [repr(k if len(k) <= 40 else k[:39] + "…") for k in keys[:most]]
    return ", ".join(shown) + (f" and {len(keys) - most} more" if len(keys) > most else "")


def parse_body(body: bytes, pre: Preprocessor, max_batch: int) -> tuple[Batch, int]:
    """The request body as one encoded batch and its number of inputs, or BadRequest saying what was expected."""
    field = pre.field
    expected = f'a JSON object {{"{field}": [...]}} holding 1 to {max_batch} inputs (see GET /metadata)'
    try:
        payload = json.loads(body)
    except (ValueError, RecursionError):
        raise BadRequest(400, f"the body is not valid JSON; send {expected}.") from None
    if not isinstance(payload, dict) or field not in payload:
        raise BadRequest(422, f"expected {expected}.")
    unknown = sorted(str(k) for k in payload if k != field)
    if unknown:
        raise BadRequest(422, f"unknown field(s) {_names(unknown)}; expected {expected}.")
    items = payload[field]
    if not isinstance(items, list) or not items:
        raise BadRequest(422, f"'{field}' must be a non-empty array; expected {expected}.")
    if len(items) > max_batch:
        raise BadRequest(413, f"a batch of {len(items)} inputs is over this server's limit of {max_batch}; split "
                              "it into smaller requests.")
    try:
        return pre.encode(items), len(items)
    except InputError as exc:
        raise BadRequest(422, f"'{field}': {exc} Expected {expected}.") from None


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax, computed stably in float64."""
    z = logits.astype(np.float64) - logits.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def answer(logits: np.ndarray, names: list[str]) -> dict:
    """The response of one request, or BadRequest 422 when the model's outputs are not finite."""
    bad = ~np.isfinite(logits).all(axis=1)
    if bad.any():
        raise BadRequest(422, f"the model's outputs for input(s) {np.flatnonzero(bad)[:5].tolist()} are not finite "
                              "(NaN or infinity): those inputs are far outside the range the model was trained on.")
    probabilities = softmax(logits)
    classes = probabilities.argmax(axis=1)
    return {"classes": classes.tolist(), "labels": [names[c] for c in classes],
            "probabilities": probabilities.tolist(), "class_names": names}


def is_json(content_type: str) -> bool:
    """Whether a Content-Type header names JSON (application/json, or a +json type; parameters allowed)."""
    media = content_type.split(";")[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def item_schema(pre: Preprocessor) -> dict:
    """The JSON schema of one raw input: a string (text), an object (a record) or nested arrays of numbers."""
    example = pre.example()
    if isinstance(example, str):
        return {"type": "string"}
    if isinstance(example, dict):
        return {"type": "object"}
    schema: dict = {"type": "number", "minimum": -FLOAT32_MAX, "maximum": FLOAT32_MAX}
    for size in reversed(pre.input_shape):
        schema = {"type": "array", "minItems": size, "maxItems": size, "items": schema}
    return schema


def request_schema(pre: Preprocessor, max_batch: int) -> dict:
    """The OpenAPI request body of POST /predict (for clients and schema-driven fuzzers)."""
    item = item_schema(pre)
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "required": [pre.field], "additionalProperties": False,
        "properties": {pre.field: {"type": "array", "minItems": 1, "maxItems": max_batch, "items": item}}},
        "example": {pre.field: [pre.example()]}}}}


def create_app(served: Served, cfg: ServeConfig, token: str | None = None, *, openapi: bool = False) -> Guard:
    """The application: POST /predict, GET /health (also HEAD), GET /metadata, wrapped in the Guard middleware.

    `openapi` exposes the schema at /openapi.json (tests and fuzzers; the served API keeps it off).
    """
    app = FastAPI(title="distil model server", docs_url=None, redoc_url=None,
                  openapi_url="/openapi.json" if openapi else None)
    names, pre = list(served.class_names), served.preprocess
    runner = MicroBatcher(served.forward, pre.collate, max_rows=cfg.max_batch, max_wait_s=cfg.max_wait_ms / 1000,
                          queue=cfg.queue) if cfg.max_wait_ms > 0 else Direct(served.forward, cfg.queue)
    app.state.runner = runner
    example = {pre.field: [pre.example()]}
    metadata = {
        "model": served.path.name, "format": served.backend, "role": served.role, "sha256": served.sha256,
        "input": pre.describe(), "num_classes": len(names), "class_names": names, "metrics": served.metrics,
        "request": {"method": "POST", "path": "/predict", "content_type": "application/json",
                    "field": pre.field, "body": example, "max_batch": cfg.max_batch,
                    "max_body_bytes": cfg.max_body_bytes, "auth": "bearer token" if token else "none"},
        "batching": {"max_wait_ms": cfg.max_wait_ms, "max_rows": cfg.max_batch, "queue": cfg.queue},
    }

    @app.exception_handler(BadRequest)
    async def bad_request(_: Request, exc: BadRequest) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(Exception)
    async def failed(_: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": f"inference failed ({type(exc).__name__}); the server keeps serving."},
                            status_code=500)

    @app.get("/health")
    @app.head("/health", operation_id="health_head")
    async def health() -> dict:
        return {"status": "ok"}

    @app.get("/metadata")
    async def get_metadata() -> dict:
        return metadata

    @app.post("/predict", openapi_extra={"requestBody": request_schema(pre, cfg.max_batch)})
    async def predict(request: Request) -> dict:
        if not is_json(request.headers.get("content-type", "")):
            raise BadRequest(415, f"send the body as JSON with the header 'Content-Type: application/json', e.g. "
                                  f"{json.dumps(example)[:200]}")
        body = await request.body()  # read in full by the Guard, within its deadline and size limit
        batch, rows = await run_in_threadpool(parse_body, body, pre, cfg.max_batch)
        try:
            logits = await runner.submit(batch, rows)
        except QueueFull:
            raise BadRequest(503, f"the server is busy ({cfg.queue} requests waiting); retry in a moment.",
                             {"Retry-After": "1"}) from None
        return answer(logits, names)

    return Guard(app, token=token, max_body_bytes=cfg.max_body_bytes, body_timeout_s=cfg.body_timeout_s)


def serve(target: Path, *, backend: str = "auto", host: str | None = None, token: str | None = None,
          **options: object) -> None:
    """Load the model and serve it with uvicorn until interrupted (127.0.0.1 unless `host` says otherwise).

    `token` (else the DISTIL_SERVE_TOKEN environment variable) is then required on every route but /health;
    `options` are ServeConfig fields (None: the run's serve section or the default).
    """
    import uvicorn

    cfg = serve_config(target, host=host, **options)
    token = token or os.environ.get(TOKEN_ENV) or None
    served = load_served(target, backend)
    app = create_app(served, cfg, token)
    if not is_loopback(cfg.host):
        log.warning("distil: serving beyond loopback on %s: anyone who can reach this address can call the model%s.",
                    cfg.host, "" if token else f"; set a token with --token or {TOKEN_ENV} to require one")
    batching = f"micro-batching {cfg.max_wait_ms:g} ms" if cfg.max_wait_ms > 0 else "no micro-batching"
    print(f"distil: serving {served.path} ({served.backend}) on http://{cfg.host}:{cfg.port} "
          f"(POST /predict, GET /metadata, GET /health; {batching}; token {'required' if token else 'off'})",
          flush=True)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", access_log=False,
                timeout_keep_alive=int(max(1, round(cfg.keep_alive_s))), timeout_graceful_shutdown=5)
