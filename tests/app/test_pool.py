"""Overload behaviour of the session pool: bounded queue, fast rejection, no lost sessions."""
from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from app.pool import Overloaded, SessionPool


class SlowSession:
    """Stands in for an onnxruntime session: blocks until released."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls = 0

    def run(self, names, feeds):
        self.calls += 1
        self.release.wait(5)
        return [np.zeros(1)]

    def get_providers(self):
        return ["CPUExecutionProvider"]


def test_full_queue_rejects_at_once_and_everyone_else_is_served():
    async def scenario():
        session = SlowSession()
        pool = SessionPool([session], max_queue=2, queue_timeout_s=5)
        running = asyncio.create_task(pool.run({}, 5))
        await asyncio.sleep(0.05)
        waiting = [asyncio.create_task(pool.run({}, 5)) for _ in range(2)]
        await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        start = loop.time()
        with pytest.raises(Overloaded):
            await pool.run({}, 5)
        assert loop.time() - start < 0.1, "rejection must not wait"
        session.release.set()
        results = await asyncio.gather(running, *waiting)
        assert len(results) == 3 and session.calls == 3
        pool.close()

    asyncio.run(scenario())


def test_queue_wait_times_out_as_overloaded():
    async def scenario():
        session = SlowSession()
        pool = SessionPool([session], max_queue=5, queue_timeout_s=0.1)
        running = asyncio.create_task(pool.run({}, 5))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded):
            await pool.run({}, 5)
        session.release.set()
        await running
        pool.close()

    asyncio.run(scenario())


def test_an_inference_timeout_returns_the_session_to_the_pool():
    async def scenario():
        session = SlowSession()
        pool = SessionPool([session], max_queue=5, queue_timeout_s=5)
        with pytest.raises(TimeoutError):
            await pool.run({}, 0.05)
        assert pool.busy == 1
        session.release.set()
        await asyncio.sleep(0.1)
        assert pool.busy == 0
        await pool.run({}, 1)  # the session is usable again
        pool.close()

    asyncio.run(scenario())


def test_cancelled_request_returns_the_session():
    async def scenario():
        session = SlowSession()
        pool = SessionPool([session], max_queue=5, queue_timeout_s=5)
        task = asyncio.create_task(pool.run({}, 5))
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        session.release.set()
        await asyncio.sleep(0.1)
        assert pool.busy == 0
        pool.close()

    asyncio.run(scenario())


def test_feeds_made_by_a_function_are_made_off_the_event_loop():
    """A feeds function runs on the session's worker thread, next to the run it feeds."""
    async def scenario():
        session = SlowSession()
        session.release.set()
        pool = SessionPool([session], max_queue=5, queue_timeout_s=5)
        threads = []

        def make_feeds():
            threads.append(threading.current_thread().name)
            return {}

        result = await pool.run(make_feeds, 5)
        assert threads and threads[0].startswith("ort") and threading.current_thread().name not in threads
        assert session.calls == 1 and result.prepare_s >= 0 and result.infer_s >= 0
        pool.close()

    asyncio.run(scenario())


def test_a_failing_feeds_function_reaches_the_caller_and_frees_the_session():
    async def scenario():
        session = SlowSession()
        session.release.set()
        pool = SessionPool([session], max_queue=5, queue_timeout_s=5)

        def corrupt():
            raise ValueError("not an image")

        with pytest.raises(ValueError, match="not an image"):
            await pool.run(corrupt, 5)
        await asyncio.sleep(0.05)
        assert pool.busy == 0 and session.calls == 0
        await pool.run({}, 1)
        pool.close()

    asyncio.run(scenario())
