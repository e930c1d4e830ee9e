"""A `distil serve` subprocess on a free loopback port, and a way to call it over HTTP (tests of the server)."""

import http.client
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

MAX_BATCH, MAX_BODY, BODY_TIMEOUT = 16, 60_000, 1  # the limits the test servers run with


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
             str(MAX_BATCH), "--max-body-bytes", str(MAX_BODY), "--body-timeout-s", str(BODY_TIMEOUT),
             *extra], stdout=self.log, stderr=subprocess.STDOUT)
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
            raw = response.read()
            return response.status, json.loads(raw) if raw else {}
        finally:
            if own:
                conn.close()

    def predict(self, inputs, conn=None, headers=None) -> tuple[int, dict]:
        return self.call("POST", "/predict", json.dumps({"inputs": inputs}).encode(),
                         {"Content-Type": "application/json", **(headers or {})}, conn=conn)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()
