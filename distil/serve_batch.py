"""Dynamic micro-batching for the server: requests that arrive within a few milliseconds share one forward pass.

The first waiting request opens a window of `max_wait_s`; every request queued before it closes (or until the
rows reach `max_rows`) is collated into one batch, run once on a single inference thread, and each request gets
its own rows back. At most `queue` requests wait; one more raises `QueueFull` (the server answers 503 with
Retry-After). `Direct` is the same interface without batching: each request is its own forward pass.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from starlette.concurrency import run_in_threadpool

from distil.preprocess import Batch


class QueueFull(Exception):
    """More requests are waiting than the server's queue holds."""


class Direct:
    """Each request runs its own forward pass in the thread pool; at most `queue` run or wait at once."""

    def __init__(self, forward: Callable[[Batch], np.ndarray], queue: int) -> None:
        self.forward, self.queue = forward, queue
        self.in_flight = 0
        self.passes = 0  # forward passes run

    async def submit(self, batch: Batch, rows: int) -> np.ndarray:
        """The model's outputs for `batch`; QueueFull when `queue` requests are already in flight."""
        if self.in_flight >= self.queue:
            raise QueueFull
        self.in_flight += 1
        try:
            self.passes += 1
            return await run_in_threadpool(self.forward, batch)
        finally:
            self.in_flight -= 1


class MicroBatcher:
    """Collects requests for up to `max_wait_s` (or `max_rows` rows) and runs them as one forward pass."""

    def __init__(self, forward: Callable[[Batch], np.ndarray], collate: Callable[[list[Batch]], Batch], *,
                 max_rows: int, max_wait_s: float, queue: int) -> None:
        self.forward, self.collate = forward, collate
        self.max_rows, self.max_wait_s, self.queue = max_rows, max_wait_s, queue
        self.pending: deque[tuple[Batch, int, asyncio.Future]] = deque()
        self.arrived = asyncio.Event()
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="distil-infer")
        self.task: asyncio.Task | None = None
        self.passes = 0  # forward passes run

    async def submit(self, batch: Batch, rows: int) -> np.ndarray:
        """The model's outputs for `batch` (its `rows` rows of a shared pass); QueueFull when the queue is full."""
        if len(self.pending) >= self.queue:
            raise QueueFull
        if self.task is None or self.task.done():
            self.task = asyncio.get_running_loop().create_task(self._loop())
        future = asyncio.get_running_loop().create_future()
        self.pending.append((batch, rows, future))
        self.arrived.set()
        return await future

    def _waiting_rows(self) -> int:
        return sum(rows for _, rows, _ in self.pending)

    async def _loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self.arrived.wait()
            self.arrived.clear()
            if not self.pending:
                continue
            deadline = loop.time() + self.max_wait_s
            while self._waiting_rows() < self.max_rows and (left := deadline - loop.time()) > 0:
                try:
                    await asyncio.wait_for(self.arrived.wait(), left)
                except TimeoutError:
                    break
                self.arrived.clear()
            taken, rows = [], 0
            while self.pending and (not taken or rows + self.pending[0][1] <= self.max_rows):
                item = self.pending.popleft()
                taken.append(item)
                rows += item[1]
            live = [item for item in taken if not item[2].done()]  # a client that left is skipped
            if live:
                await self._run(loop, live)
            if self.pending:
                self.arrived.set()

    async def _run(self, loop: asyncio.AbstractEventLoop, items: list[tuple[Batch, int, asyncio.Future]]) -> None:
        try:
            batch = self.collate([b for b, _, _ in items])
            self.passes += 1
            out = await loop.run_in_executor(self.executor, self.forward, batch)
        except Exception as exc:  # every request of the pass gets the failure
            for _, _, future in items:
                if not future.done():
                    future.set_exception(exc)
            return
        start = 0
        for _, rows, future in items:
            if not future.done():
                future.set_result(out[start:start + rows])
            start += rows
