"""Optional dynamic micro-batching in front of a session pool.

Requests that arrive within ``max_wait_ms`` of each other (up to ``max_batch``) are run
as one batched inference — every exported graph has a dynamic batch axis — and the
outputs are split back per request. It trades a little latency at low load for
throughput under concurrency; whether that wins depends on the model and the machine,
so it is off by default and measured by ``poseserve bench`` (docs/benchmarks.md).
"""
from __future__ import annotations

import asyncio
import time

import numpy as np

from app.pool import Feeds, Overloaded, RunResult, SessionPool


class MicroBatcher:
    def __init__(self, pool: SessionPool, max_batch: int, max_wait_ms: float) -> None:
        self.pool = pool
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None
        self._inflight: set[asyncio.Task] = set()

    @property
    def providers(self) -> list[str]:
        return self.pool.providers

    def admission(self) -> Overloaded | None:
        """The pool's expected-wait rule, counting the requests still forming batches."""
        refused = self.pool.admission()
        if refused is None and self._queue is not None:
            wait = (self._queue.qsize() // self.max_batch + 1) * self.pool.run_s / len(self.pool.sessions)
            refused = self.pool.over_limit(wait)
        return refused

    def _ensure_worker(self) -> asyncio.Queue:
        if self._queue is None:
            self._queue = asyncio.Queue()
            self._worker = asyncio.get_running_loop().create_task(self._collect())
        return self._queue

    async def run(self, feeds: Feeds, timeout_s: float) -> RunResult:
        """Same contract as ``SessionPool.run`` for one request (its rows stay together)."""
        queue = self._ensure_worker()
        refused = self.admission()
        if refused is not None:
            raise refused
        start = time.perf_counter()
        if callable(feeds):  # made on a worker thread, before joining a batch
            feeds = await asyncio.get_running_loop().run_in_executor(None, feeds)
        prepare_s = time.perf_counter() - start
        future: asyncio.Future = asyncio.get_running_loop().create_future()
        await queue.put((feeds["image"], future))
        outputs, infer_s = await asyncio.wait_for(future, timeout_s)
        return RunResult(outputs, prepare_s, infer_s)

    async def _collect(self) -> None:
        assert self._queue is not None
        while True:
            items = [await self._queue.get()]
            deadline = time.perf_counter() + self.max_wait_s
            while len(items) < self.max_batch:
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    break
                try:
                    items.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            items = [(x, f) for x, f in items if not f.done()]  # callers that gave up
            if items:
                task = asyncio.create_task(self._run_batch(items))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)

    async def _run_batch(self, items: list[tuple[np.ndarray, asyncio.Future]]) -> None:
        batch = np.concatenate([x for x, _ in items], axis=0)
        try:
            outputs, _, seconds = await self.pool.run({"image": batch}, timeout_s=60)
        except BaseException as exc:  # noqa: BLE001 - every waiter must hear about it
            for _, f in items:
                if not f.done():
                    f.set_exception(exc if isinstance(exc, Exception) else Overloaded("cancelled"))
            return
        start = 0
        for x, f in items:  # a request's rows: its crops (and their mirror images)
            rows = slice(start, start + len(x))
            start = rows.stop
            if not f.done():
                f.set_result(([o[rows] for o in outputs], seconds))

    def close(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
        self.pool.close()
