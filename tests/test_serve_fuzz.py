"""The server's HTTP API fuzzed from its own OpenAPI schema (schemathesis): valid and invalid bodies, headers and
methods, a few hundred cases in seconds; no response may be a 5xx.

The schema is exposed here only (`create_app(..., openapi=True)`); the served API keeps /openapi.json off. The app
runs in a real uvicorn server on a free loopback port, with micro-batching on, as `distil serve` runs it.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from torch import nn

schemathesis = pytest.importorskip("schemathesis", reason="the fuzzer is a test dependency (requirements.txt)")
GenerationMode = schemathesis.GenerationMode
uvicorn = pytest.importorskip("uvicorn", reason="the server's packages (distil[serve]) are absent")

from distil.preprocess import preprocessor, standardize_spec  # noqa: E402
from distil.recipe import ServeConfig  # noqa: E402
from distil.serve import Served, create_app  # noqa: E402

CASES = 100  # per operation and mode (POST /predict, GET /health, HEAD /health, GET /metadata)


def digits_served() -> Served:
    """A tiny digits-shaped model (1x8x8 raw images, 0..16) with the standardize preprocessing of a run."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    train = np.random.default_rng(0).integers(0, 17, size=(20, 1, 8, 8)).astype(np.float32) / 16
    spec = standardize_spec(train, train.mean(keepdims=True).reshape(1, 1, 1, 1), np.full((1, 1, 1, 1), 0.3),
                            raw_scale=16.0)

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    pre = preprocessor({"preprocess": spec, "input_shape": [1, 8, 8]})
    return Served(Path("fuzz.pt"), "torch", forward, pre, [str(i) for i in range(10)], "student", {}, "0" * 64)


class Background:
    """A uvicorn server in a thread on a free loopback port."""

    def __init__(self, app) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert time.monotonic() < deadline and self.thread.is_alive(), "the server did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


@pytest.fixture(scope="module")
def api():
    """The schema and base URL of a served tiny model."""
    cfg = ServeConfig(max_batch=8, max_body_bytes=20_000, body_timeout_s=2)
    server = Background(create_app(digits_served(), cfg, openapi=True))
    try:
        url = f"http://127.0.0.1:{server.port}"
        yield schemathesis.openapi.from_url(f"{url}/openapi.json"), url
    finally:
        server.stop()


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_no_request_the_schema_allows_or_breaks_gets_a_5xx(api, mode):
    schema, url = api
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {(op.method.upper(), op.path) for op in operations} >= {("POST", "/predict"), ("GET", "/health"),
                                                                   ("HEAD", "/health"), ("GET", "/metadata")}
    statuses: list[int] = []
    for operation in operations:
        if mode == "negative" and not len(operation.body):  # a route without a body: nothing to break
            continue
        @given(case=operation.as_strategy(GenerationMode(mode)))
        @settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                  derandomize=True)
        def call(case) -> None:
            response = case.call(base_url=url, timeout=10)
            statuses.append(response.status_code)
            assert response.status_code < 500, f"{response.status_code} {response.text[:300]}\n" \
                                               f"{case.as_curl_command()}"
            assert response.status_code == 200 or len(response.content) < 2_000  # error bodies stay short

        call()
    assert len(statuses) >= CASES + (3 if mode == "positive" else 0)
    if mode == "positive":
        assert statuses.count(200) > len(statuses) // 2  # valid bodies are answered
    else:
        assert any(400 <= code < 500 for code in statuses)  # broken ones refused


def test_the_schema_is_off_unless_asked():
    app = create_app(digits_served(), ServeConfig())
    paths = {route.path for route in app.app.routes}
    assert "/openapi.json" not in paths and "/docs" not in paths
    assert "/openapi.json" in {route.path for route in create_app(digits_served(), ServeConfig(),
                                                                  openapi=True).app.routes}
