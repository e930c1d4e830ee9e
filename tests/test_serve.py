"""`distil serve` as a real uvicorn subprocess on a free loopback port, called over HTTP."""

import hashlib
import http.client
import json
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run_cli

import distil
from distil.compress.files import load_any
from distil.compress.onnx_export import OnnxModel
from distil.data import load_dataset
from distil.recipe import load_recipe
from distil.serve import softmax

MAX_BATCH, MAX_BODY = 16, 60_000


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `distil serve` subprocess and a way to call it."""

    def __init__(self, target: Path, log: Path, *extra: str) -> None:
        self.port = free_port()
        self.log = log.open("w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "distil", "serve", str(target), "--port", str(self.port), "--max-batch",
             str(MAX_BATCH), "--max-body-bytes", str(MAX_BODY), *extra], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.call("GET", "/health")[0] == 200:
                    break
            except OSError:
                pass
            assert self.proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "server did not come up"
            time.sleep(0.2)

    def call(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
             conn: http.client.HTTPConnection | None = None) -> tuple[int, dict]:
        own = conn is None
        conn = conn or http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            return response.status, json.loads(response.read())
        finally:
            if own:
                conn.close()

    def predict(self, inputs, conn=None) -> tuple[int, dict]:
        return self.call("POST", "/predict", json.dumps({"inputs": inputs}).encode(), conn=conn)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished tiny run with an exported ONNX student."""
    from conftest import TINY_RECIPE

    root = tmp_path_factory.mktemp("serve")
    (root / "tiny.yaml").write_text(TINY_RECIPE)
    recipe = load_recipe(root / "tiny.yaml", ["distill.baseline=false", "export={}"])
    return distil.run(recipe, runs_dir=str(root / "runs")).run_dir


@pytest.fixture(scope="module")
def onnx_server(run_dir):
    server = Server(run_dir, run_dir / "serve-onnx.log")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def test_inputs(run_dir):
    return load_dataset(load_recipe(run_dir / "recipe.yaml").data).test.x[:64]


def test_health_and_metadata(onnx_server, run_dir):
    assert onnx_server.call("GET", "/health") == (200, {"status": "ok"})
    status, meta = onnx_server.call("GET", "/metadata")
    onnx = run_dir / "models/student.onnx"
    assert status == 200 and meta["format"] == "onnx" and meta["model"] == "student.onnx"
    assert meta["sha256"] == hashlib.sha256(onnx.read_bytes()).hexdigest()
    assert meta["input"]["shape"] == [1, 8, 8] and meta["input"]["per"] == "channel"
    assert len(meta["input"]["mean"]) == 1 and "standardized" in meta["input"]["preprocessing"]
    assert meta["class_names"] == [str(i) for i in range(10)] and meta["num_classes"] == 10
    results = json.loads((run_dir / "results.json").read_text())
    assert meta["metrics"]["top1"] == results["models"]["onnx"]["top1"]
    assert meta["request"]["max_batch"] == MAX_BATCH and meta["request"]["max_body_bytes"] == MAX_BODY


def test_predictions_equal_the_in_process_model(onnx_server, run_dir, test_inputs):
    x = test_inputs[:MAX_BATCH]
    status, out = onnx_server.predict(x.tolist())
    assert status == 200
    expected = softmax(OnnxModel(run_dir / "models/student.onnx").run(x.numpy()))
    torch_model, _ = load_any(run_dir / "models/student.pt")
    assert out["classes"] == expected.argmax(1).tolist() == torch_model(x).argmax(1).tolist()
    np.testing.assert_allclose(out["probabilities"], expected, rtol=1e-6, atol=1e-7)
    assert out["labels"] == [str(c) for c in out["classes"]] and out["class_names"][3] == "3"


BAD_BODIES = {
    "malformed JSON": (b'{"inputs": [[[', 400, "not valid JSON"),
    "no inputs field": (b'{"x": 1}', 422, 'JSON object {"inputs"'),
    "wrong shape": (json.dumps({"inputs": [[0.0] * 64]}).encode(), 422, "shaped [1, 8, 8], got [64]"),
    "ragged": (json.dumps({"inputs": [[[[0.0] * 8] * 8], [[[0.0] * 7] * 8]]}).encode(), 422, "rectangular"),
    "strings": (json.dumps({"inputs": [[[["a"] * 8] * 8]]}).encode(), 422, "only numbers"),
    "NaN": (b'{"inputs": [[[' + b",".join([b"[NaN" + b", 0" * 7 + b"]"] * 8) + b"]]]}", 422, "NaN"),
    "empty batch": (b'{"inputs": []}', 422, "non-empty"),
    "batch over the limit": (json.dumps({"inputs": [[[[0.0] * 8] * 8]] * (MAX_BATCH + 1)}).encode(), 413,
                             f"limit of {MAX_BATCH}"),
    "body over the limit": (b'{"inputs": [' + b" " * MAX_BODY + b"]}", 413, f"limit of {MAX_BODY}"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_input_gets_a_4xx_that_says_what_was_expected(onnx_server, test_inputs, case):
    body, status, message = BAD_BODIES[case]
    got, out = onnx_server.call("POST", "/predict", body, {"Content-Type": "application/json"})
    assert got == status and message in out["detail"], out
    assert onnx_server.predict(test_inputs[:1].tolist())[0] == 200  # and it keeps serving


def test_a_declared_oversized_body_is_refused_before_it_is_read(onnx_server):
    conn = http.client.HTTPConnection("127.0.0.1", onnx_server.port, timeout=30)
    conn.putrequest("POST", "/predict")
    conn.putheader("Content-Length", str(10 * MAX_BODY))
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and "limit" in json.loads(response.read())["detail"]
    conn.close()


def test_burst_of_500_requests_from_8_threads_all_answered_correctly(onnx_server, run_dir, test_inputs):
    onnx = OnnxModel(run_dir / "models/student.onnx")
    rng = np.random.default_rng(0)
    jobs = [rng.integers(0, len(test_inputs), size=int(rng.integers(1, 5))) for _ in range(500)]

    def worker(chunk: list) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", onnx_server.port, timeout=30)
        good = 0
        for index in chunk:
            x = test_inputs[index].numpy()
            status, out = onnx_server.predict(x.tolist(), conn)
            good += status == 200 and out["classes"] == onnx.run(x).argmax(1).tolist()
        conn.close()
        return good

    with ThreadPoolExecutor(8) as pool:
        answered = sum(pool.map(worker, [jobs[i::8] for i in range(8)]))
    assert answered == 500


def test_pytorch_model_file_is_served_too(run_dir, test_inputs):
    server = Server(run_dir / "models/student.pt", run_dir / "serve-torch.log", "--host", "127.0.0.1")
    try:
        status, meta = server.call("GET", "/metadata")
        assert status == 200 and meta["format"] == "torch" and meta["input"]["shape"] == [1, 8, 8]
        model, _ = load_any(run_dir / "models/student.pt")
        x = test_inputs[:8]
        status, out = server.predict(x.tolist())
        assert status == 200 and out["classes"] == model(x).argmax(1).tolist()
        np.testing.assert_allclose(out["probabilities"], torch.softmax(model(x), 1).detach().numpy(), atol=1e-6)
        assert server.call("POST", "/predict", b"[1, 2]")[0] == 422
    finally:
        server.stop()


def test_serve_command_refuses_bad_targets_and_options(tmp_path, capsys):
    code, _, err = run_cli(["serve", tmp_path / "missing"], capsys)
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli(["serve", tmp_path, "--port", "70000"], capsys)
    assert code == 2 and "--port" in err
    code, _, err = run_cli(["serve", tmp_path], capsys)
    assert code == 2 and "finish the run first" in err
