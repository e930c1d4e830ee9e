"""`distil serve` as a real uvicorn subprocess on a free loopback port, called over HTTP."""

import asyncio
import hashlib
import http.client
import json
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_runner import run_cli
from serve_client import BODY_TIMEOUT, MAX_BATCH, MAX_BODY, Server

import distil
from distil.compress.files import load_any
from distil.compress.onnx_export import OnnxModel
from distil.data import load_dataset
from distil.preprocess import Preprocessor
from distil.recipe import load_recipe
from distil.serve import is_loopback, serve_config, softmax
from distil.serve_batch import MicroBatcher


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
    """Raw test inputs (digits in their natural range, 0..16 as scikit-learn holds them), as a client sends them."""
    data = load_recipe(run_dir / "recipe.yaml").data
    return load_dataset(data.model_copy(update={"normalize": False})).test.x[:64] * 16


@pytest.fixture(scope="module")
def model_inputs(run_dir):
    """The same test inputs standardized as in training, as the model takes them."""
    return load_dataset(load_recipe(run_dir / "recipe.yaml").data).test.x[:64]


def test_health_and_metadata(onnx_server, run_dir):
    assert onnx_server.call("GET", "/health") == (200, {"status": "ok"})
    status, meta = onnx_server.call("GET", "/metadata")
    onnx = run_dir / "models/student.onnx"
    assert status == 200 and meta["format"] == "onnx" and meta["model"] == "student.onnx"
    assert meta["sha256"] == hashlib.sha256(onnx.read_bytes()).hexdigest()
    assert meta["input"]["shape"] == [1, 8, 8] and meta["input"]["per"] == "channel"
    assert meta["input"]["kind"] == "standardize" and len(meta["input"]["mean"]) == 1
    assert "natural range" in meta["input"]["preprocessing"]
    assert meta["class_names"] == [str(i) for i in range(10)] and meta["num_classes"] == 10
    results = json.loads((run_dir / "results.json").read_text())
    assert meta["metrics"]["top1"] == results["models"]["onnx"]["top1"]
    assert meta["request"]["max_batch"] == MAX_BATCH and meta["request"]["max_body_bytes"] == MAX_BODY


def test_the_example_in_metadata_works_when_pasted(onnx_server):
    meta = onnx_server.call("GET", "/metadata")[1]
    example = np.asarray(meta["request"]["body"]["inputs"])
    assert example.shape == (1, 1, 8, 8) and example.min() == 0 and example.max() > 8  # a raw digit (0..16)
    assert (example == example.round()).all()  # whole numbers, as scikit-learn's digits hold them
    status, out = onnx_server.call("POST", "/predict", json.dumps(meta["request"]["body"]).encode(),
                                   {"Content-Type": "application/json"})
    assert status == 200 and len(out["classes"]) == 1


def test_raw_inputs_give_the_predictions_of_the_model_on_standardized_inputs(onnx_server, run_dir, test_inputs,
                                                                              model_inputs):
    status, out = onnx_server.predict(test_inputs[:MAX_BATCH].tolist())
    assert status == 200
    x = model_inputs[:MAX_BATCH]
    expected = softmax(OnnxModel(run_dir / "models/student.onnx").run(x.numpy()))
    torch_model, _ = load_any(run_dir / "models/student.pt")
    assert out["classes"] == expected.argmax(1).tolist() == torch_model(x).argmax(1).tolist()
    np.testing.assert_allclose(out["probabilities"], expected, rtol=1e-4, atol=1e-5)
    assert out["labels"] == [str(c) for c in out["classes"]] and out["class_names"][3] == "3"


BAD_BODIES = {
    "malformed JSON": (b'{"inputs": [[[', 400, "not valid JSON"),
    "no inputs field": (b'{"x": 1}', 422, 'JSON object {"inputs"'),
    "wrong shape": (json.dumps({"inputs": [[0.0] * 64]}).encode(), 422, "shaped [1, 8, 8], got [64]"),
    "ragged": (json.dumps({"inputs": [[[[0.0] * 8] * 8], [[[0.0] * 7] * 8]]}).encode(), 422, "rectangular"),
    "strings": (json.dumps({"inputs": [[[["a"] * 8] * 8]]}).encode(), 422, "only numbers"),
    "NaN": (b'{"inputs": [[[' + b",".join([b"[NaN" + b", 0" * 7 + b"]"] * 8) + b"]]]}", 422, "NaN"),
    "beyond float32": (json.dumps({"inputs": [[[[1e300] * 8] * 8]]}).encode(), 422, "float32"),
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


def test_burst_of_500_requests_from_8_threads_all_answered_correctly(onnx_server, run_dir, test_inputs,
                                                                     model_inputs):
    onnx = OnnxModel(run_dir / "models/student.onnx")
    rng = np.random.default_rng(0)
    jobs = [rng.integers(0, len(test_inputs), size=int(rng.integers(1, 5))) for _ in range(500)]

    def worker(chunk: list) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", onnx_server.port, timeout=30)
        good = 0
        for index in chunk:
            status, out = onnx_server.predict(test_inputs[index].tolist(), conn)
            good += status == 200 and out["classes"] == onnx.run(model_inputs[index].numpy()).argmax(1).tolist()
        conn.close()
        return good

    with ThreadPoolExecutor(8) as pool:
        answered = sum(pool.map(worker, [jobs[i::8] for i in range(8)]))
    assert answered == 500


def raw_request(port: int, data: bytes, wait: float = 30) -> bytes:
    """Send raw bytes, then read what the server answers until it closes the connection (or `wait` passes)."""
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as sock:
        sock.sendall(data)
        got = b""
        try:
            while chunk := sock.recv(65536):
                got += chunk
        except TimeoutError:
            pass
        return got


def test_only_json_is_accepted(onnx_server, test_inputs):
    body = json.dumps({"inputs": test_inputs[:1].tolist()}).encode()
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", ""):
        status, out = onnx_server.call("POST", "/predict", body, {"Content-Type": content_type})
        assert status == 415 and "application/json" in out["detail"]
    assert onnx_server.call("POST", "/predict", body, {"Content-Type": "application/json; charset=utf-8"})[0] == 200


def test_error_bodies_stay_short(onnx_server):
    body = json.dumps({"inputs": [[[[0.0] * 8] * 8]], **{f"key{i}": i for i in range(100_000)}}).encode()
    assert len(body) < MAX_BODY * 100
    server = onnx_server
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    conn.request("POST", "/predict", body=body[:MAX_BODY - 10].rsplit(b",", 1)[0] + b"}",
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    raw = response.read()
    assert response.status == 422 and len(raw) < 600 and "more" in json.loads(raw)["detail"]
    conn.close()


def test_head_health_answers(onnx_server):
    conn = http.client.HTTPConnection("127.0.0.1", onnx_server.port, timeout=30)
    conn.request("HEAD", "/health")
    response = conn.getresponse()
    assert response.status == 200 and response.read() == b""
    conn.close()


def test_an_incomplete_body_times_out_and_the_connection_closes(onnx_server):
    start = time.monotonic()
    got = raw_request(onnx_server.port, b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                        b"Content-Length: 100\r\n\r\n{\"inputs\"")
    assert got.startswith(b"HTTP/1.1 408") and b"did not arrive" in got
    assert time.monotonic() - start < BODY_TIMEOUT + 10  # closed by the server, not by our own timeout


def test_a_client_that_leaves_mid_body_leaves_no_traceback(onnx_server, test_inputs):
    for _ in range(3):
        with socket.create_connection(("127.0.0.1", onnx_server.port)) as sock:
            sock.sendall(b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 1000\r\n\r\n{\"inputs\": [")
    assert onnx_server.predict(test_inputs[:1].tolist())[0] == 200
    onnx_server.log.flush()
    assert "Traceback" not in Path(onnx_server.log.name).read_text()


def test_pytorch_model_file_is_served_with_a_token(run_dir, test_inputs, model_inputs, monkeypatch):
    monkeypatch.setenv("DISTIL_SERVE_TOKEN", "s3cret-token")
    server = Server(run_dir / "models/student.pt", run_dir / "serve-torch.log", "--host", "127.0.0.1")
    auth = {"Authorization": "Bearer s3cret-token"}
    try:
        assert server.call("GET", "/health")[0] == 200  # open: probes need no token
        assert server.call("GET", "/metadata")[0] == 401
        status, out = server.predict(test_inputs[:1].tolist(), headers={"Authorization": "Bearer wrong"})
        assert status == 401 and "bearer token" in out["detail"]
        status, meta = server.call("GET", "/metadata", headers=auth)
        assert status == 200 and meta["format"] == "torch" and meta["input"]["shape"] == [1, 8, 8]
        assert meta["request"]["auth"] == "bearer token"
        model, _ = load_any(run_dir / "models/student.pt")
        x = model_inputs[:8]
        status, out = server.predict(test_inputs[:8].tolist(), headers=auth)
        assert status == 200 and out["classes"] == model(x).argmax(1).tolist()
        np.testing.assert_allclose(out["probabilities"], torch.softmax(model(x), 1).detach().numpy(), atol=1e-5)
        assert server.call("POST", "/predict", b"[1, 2]", {"Content-Type": "application/json", **auth})[0] == 422
    finally:
        server.stop()


def test_a_recipe_cannot_bind_beyond_loopback(run_dir, tmp_path, caplog):
    folder = tmp_path / "run"
    (folder / "models").mkdir(parents=True)
    text = (run_dir / "recipe.yaml").read_text().replace("host: 127.0.0.1", "host: 0.0.0.0")
    assert "host: 0.0.0.0" in text
    (folder / "recipe.yaml").write_text(text)
    with caplog.at_level("WARNING", logger="distil"):
        cfg = serve_config(folder)
    assert cfg.host == "127.0.0.1" and "needs --host on the command line" in caplog.text
    assert serve_config(folder, host="0.0.0.0").host == "0.0.0.0"  # the command line may
    assert is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("example.org")


def test_requests_within_the_window_share_one_forward_pass():
    calls = []

    def forward(x):
        calls.append(len(x))
        time.sleep(0.01)
        return x * 2

    async def main():
        batcher = MicroBatcher(forward, Preprocessor({}, (3,)).collate, max_rows=64, max_wait_s=0.05, queue=100)
        xs = [np.full((i + 1, 3), float(i)) for i in range(8)]
        outs = await asyncio.gather(*(batcher.submit(x, len(x)) for x in xs))
        for x, out in zip(xs, outs):
            np.testing.assert_array_equal(out, x * 2)
        return batcher.passes

    assert asyncio.run(main()) == 1 and calls == [sum(range(1, 9))]


def test_a_full_queue_answers_busy():
    async def main():
        batcher = MicroBatcher(lambda x: x, Preprocessor({}, (1,)).collate, max_rows=4, max_wait_s=0.05, queue=2)
        results = await asyncio.gather(*(batcher.submit(np.zeros((1, 1)), 1) for _ in range(3)),
                                       return_exceptions=True)
        return [type(r).__name__ for r in results]

    assert asyncio.run(main()) == ["ndarray", "ndarray", "QueueFull"]


def test_serve_command_refuses_bad_targets_and_options(tmp_path, capsys):
    code, _, err = run_cli(["serve", tmp_path / "missing"], capsys)
    assert code == 2 and "does not exist" in err
    code, _, err = run_cli(["serve", tmp_path, "--port", "70000"], capsys)
    assert code == 2 and "--port" in err
    code, _, err = run_cli(["serve", tmp_path], capsys)
    assert code == 2 and "finish the run first" in err
