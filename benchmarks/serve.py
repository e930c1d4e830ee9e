"""Load on the real server: `distil serve` as a uvicorn subprocess, called over HTTP from this process.

1. Throughput and latency at batch 1: 16 client threads (one keep-alive connection each) post single digits
   images until N requests are answered, with micro-batching (the default 2 ms window) and without
   (--max-wait-ms 0), interleaved over rounds; every answer is checked (status 200 and the class the model gives
   in-process), so "errors" counts any other outcome.
2. Slow clients: S connections each declare `Content-Length: 100` and trickle one byte a second (reconnecting when
   the server closes them after its body deadline) while a probe asks GET /health 20 times a second.

    nice -n 10 .venv/bin/python benchmarks/serve.py                  # writes benchmarks/results/serve.md
    nice -n 10 .venv/bin/python benchmarks/serve.py --requests 500 --rounds 1 --slow 30 --slow-seconds 5 --quick
"""

from __future__ import annotations

import argparse
import http.client
import json
import platform
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from sklearn.datasets import load_digits

import distil
from distil.recipe import validate_recipe
from distil.serve import load_served

ROOT = Path(__file__).resolve().parent
RECIPE = {"name": "serve-bench", "seed": 0, "data": {"name": "digits"},
          "teacher": {"name": "mlp", "hidden": [2048, 2048, 2048], "epochs": 2},
          "student": {"name": "mlp", "hidden": [64]},
          "train": {"epochs": 3, "batch_size": 64}, "distill": {"baseline": False}, "export": {},
          "eval": {"latency_repeats": 5, "throughput_batch": 64}}


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`distil serve RUN` as a subprocess on a free loopback port."""

    def __init__(self, run_dir: Path, log: Path, *options: str) -> None:
        self.port = free_port()
        self.log = log.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "distil", "serve", str(run_dir), "--port", str(self.port),
                                      *options], stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while True:
            try:
                if get(self.port, "/health")[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not come up; see {log}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Terminate the server and wait for it."""
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def get(port: int, path: str, conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    """GET `path`: status and body."""
    own = conn is None
    conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        if own:
            conn.close()


def load(port: int, bodies: list[bytes], expected: list[int], requests: int, clients: int) -> dict:
    """`requests` single-input POSTs from `clients` threads; requests/s, p50/p99 latency (ms) and errors."""
    counter = iter(range(requests))
    lock = threading.Lock()
    latencies: list[float] = []
    errors: list[str] = []

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        headers = {"Content-Type": "application/json"}
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                break
            k = i % len(bodies)
            start = time.perf_counter()
            try:
                conn.request("POST", "/predict", body=bodies[k], headers=headers)
                response = conn.getresponse()
                raw = response.read()
                ok = response.status == 200 and json.loads(raw)["classes"] == [expected[k]]
                outcome = None if ok else f"{response.status} {raw[:80]!r}"
            except (OSError, http.client.HTTPException, ValueError, KeyError) as exc:
                outcome = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            elapsed = time.perf_counter() - start
            with lock:
                latencies.append(elapsed)
                if outcome is not None:
                    errors.append(outcome)
        conn.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(client) for _ in range(clients)]:
            future.result()
    wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"requests": len(latencies), "errors": len(errors), "first_errors": errors[:3], "wall_s": wall,
            "rps": len(latencies) / wall, "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99))}


def slow_clients(port: int, count: int, seconds: float, declared: int = 100) -> dict:
    """`count` connections trickling a declared body, /health probed 20 times a second meanwhile."""
    stop = threading.Event()
    closed = [0]
    lock = threading.Lock()

    def open_one() -> socket.socket:
        s = socket.create_connection(("127.0.0.1", port), timeout=5)
        s.sendall(f"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  f"Content-Length: {declared}\r\n\r\n".encode())
        s.setblocking(False)
        return s

    def trickle(share: int) -> None:
        socks = [open_one() for _ in range(share)]
        while not stop.is_set():
            for i, s in enumerate(socks):
                try:
                    s.recv(4096, socket.MSG_PEEK)  # an answer (408) or end of stream: the server let it go
                    s.close()
                    with lock:
                        closed[0] += 1
                    socks[i] = open_one()
                    continue
                except BlockingIOError:  # still waiting for its body
                    pass
                except OSError:
                    s.close()
                    socks[i] = open_one()
                    continue
                try:
                    s.send(b" ")
                except OSError:
                    pass
            stop.wait(1.0)
        for s in socks:
            s.close()

    workers = 10
    shares = [count // workers + (i < count % workers) for i in range(workers)]
    threads = [threading.Thread(target=trickle, args=(n,), daemon=True) for n in shares]
    for t in threads:
        t.start()
    time.sleep(1.0)  # all connected
    probes: list[float] = []
    failed = 0
    conn = None
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        try:
            conn = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            status, _ = get(port, "/health", conn)
            failed += status != 200
        except (OSError, http.client.HTTPException):
            failed += 1
            conn = None
        probes.append(time.perf_counter() - start)
        time.sleep(max(0.0, 0.05 - (time.perf_counter() - start)))
    stop.set()
    for t in threads:
        t.join()
    ms = np.array(probes) * 1000
    return {"slow": count, "seconds": seconds, "probes": len(probes), "failed": failed,
            "p50": float(np.percentile(ms, 50)), "p99": float(np.percentile(ms, 99)), "max": float(ms.max()),
            "closed_by_server": closed[0]}


def main() -> None:
    """Train the digits student, serve it and measure; write the results table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=6000, help="requests per configuration and round")
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds of both configurations")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--slow", type=int, default=300, help="slow clients")
    parser.add_argument("--slow-seconds", type=float, default=25.0, help="how long the slow clients stay")
    parser.add_argument("--quick", action="store_true", help="print only; do not write the results file")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="distil-serve-bench-"))
    begun = time.perf_counter()
    run_dir = distil.run(validate_recipe(RECIPE), runs_dir=str(work / "runs"), quiet=True).run_dir
    raw = load_digits().images[:200, None].tolist()  # raw 8x8 images, values 0..16 as the dataset holds them
    bodies = [json.dumps({"inputs": [x]}).encode() for x in raw]
    params = {role: row["params"] for role, row in json.loads((run_dir / "results.json").read_text())["models"].items()}
    models = {f"student ({params['student']:,} parameters, ONNX Runtime)": run_dir,
              f"teacher ({params['teacher']:,} parameters, PyTorch)": run_dir / "models" / "teacher.pt"}
    expected = {}
    for name, target in models.items():
        served = load_served(target)
        expected[name] = [int(c) for c in served.forward(served.preprocess.encode(raw)).argmax(1)]
    configs = {"micro-batching (2 ms window)": ("--max-wait-ms", "2"), "no micro-batching": ("--max-wait-ms", "0")}
    pairs = [(model, config) for model in models for config in configs]
    rows: dict[tuple[str, str], list[dict]] = {pair: [] for pair in pairs}
    for round_ in range(args.rounds):
        for model, config in (pairs if round_ % 2 == 0 else reversed(pairs)):
            server = Server(models[model], work / "serve.log", *configs[config])
            try:
                load(server.port, bodies, expected[model], 200, args.clients)  # warm-up
                result = load(server.port, bodies, expected[model], args.requests, args.clients)
            finally:
                server.stop()
            rows[model, config].append(result)
            print(f"round {round_ + 1} {model}, {config}: {result['rps']:.0f} req/s, p50 {result['p50']:.1f} ms, "
                  f"p99 {result['p99']:.1f} ms, {result['errors']} errors of {result['requests']}", flush=True)
    student = next(iter(models))
    server = Server(run_dir, work / "serve-slow.log")
    try:
        idle = slow_clients(server.port, 0, 5.0)
        slow = slow_clients(server.port, args.slow, args.slow_seconds)
        after = load(server.port, bodies, expected[student], 500, args.clients)
    finally:
        server.stop()
    log_text = (work / "serve-slow.log").read_text()
    print(f"/health idle p99 {idle['p99']:.1f} ms; with {args.slow} slow clients p50 {slow['p50']:.1f} p99 "
          f"{slow['p99']:.1f} ms, {slow['failed']} failed; after: {after['errors']} errors", flush=True)
    wall = time.perf_counter() - begun
    lines = [
        "# distil serve under load",
        "",
        f"`nice -n 10 .venv/bin/python benchmarks/serve.py{' '.join([''] + sys.argv[1:])}` on {platform.machine()} "
        f"({__import__('os').cpu_count()} CPU cores, shared with other jobs), {wall:.0f} s wall. The server is "
        "`distil serve` (uvicorn subprocess, one worker) of a digits run's models, called over loopback HTTP/1.1 "
        "by this process.",
        "",
        f"## Batch 1, {args.clients} concurrent clients",
        "",
        f"Each client thread keeps one connection and posts one raw 8x8 image per request until {args.requests:,} "
        "requests are answered; every answer is checked (200 and the class the model gives in-process). Rounds "
        "interleave the settings; the median round (the slower middle one for an even count) is shown, every round "
        "below it.",
        "",
        "| model | server | requests | errors | requests/s | p50 ms | p99 ms |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for (model, config), results in rows.items():
        mid = sorted(results, key=lambda r: r["rps"])[(len(results) - 1) // 2]
        lines.append(f"| {model} | {config} | {sum(r['requests'] for r in results):,} | "
                     f"{sum(r['errors'] for r in results)} | {mid['rps']:.0f} | {mid['p50']:.1f} | {mid['p99']:.1f} |")
    lines += ["", "Rounds: " + "; ".join(
        f"{model.split(' (')[0]}, {config}: " + ", ".join(f"{r['rps']:.0f} req/s (p99 {r['p99']:.1f})" for r in results)
        for (model, config), results in rows.items()) + ".", ""]
    lines += [
        f"## {args.slow} slow clients",
        "",
        f"{args.slow} connections each declare `Content-Length: 100` and send one byte a second for "
        f"{args.slow_seconds:g} s (a connection the server closes after its 10 s body deadline, with a 408, is "
        "reopened at once, so the count stays); meanwhile `GET /health` is asked 20 times a second on one "
        "keep-alive connection.",
        "",
        "| /health while | probes | failed | p50 ms | p99 ms | max ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
        f"| idle | {idle['probes']} | {idle['failed']} | {idle['p50']:.1f} | {idle['p99']:.1f} | {idle['max']:.1f} |",
        f"| {args.slow} slow clients | {slow['probes']} | {slow['failed']} | {slow['p50']:.1f} | {slow['p99']:.1f} | "
        f"{slow['max']:.1f} |",
        "",
        f"Slow connections closed by the server (408 after the body deadline) and reopened: "
        f"{slow['closed_by_server']}. Right after, {after['requests']} batch-1 predictions of the student from "
        f"{args.clients} clients: {after['errors']} errors, {after['rps']:.0f} requests/s. Tracebacks in the server "
        f"log: {log_text.count('Traceback')}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    if not args.quick:
        (ROOT / "results" / "serve.md").write_text(text, encoding="utf-8")


if __name__ == "__main__":
    main()
