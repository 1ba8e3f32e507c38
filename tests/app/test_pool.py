"""Overload behaviour of the session pool: admission by expected wait, fast rejection, no lost sessions."""
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


async def occupy(pool: SessionPool, waiters: int) -> list[asyncio.Task]:
    """One request running on the pool's (single) session and ``waiters`` queued behind it."""
    tasks = [asyncio.create_task(pool.run({}, 5))]
    await asyncio.sleep(0.05)
    tasks += [asyncio.create_task(pool.run({}, 5)) for _ in range(waiters)]
    await asyncio.sleep(0.05)
    return tasks


async def assert_refused_at_once(pool: SessionPool) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    with pytest.raises(Overloaded):
        await pool.run({}, 5)
    assert loop.time() - start < 0.1, "rejection must not wait"


def test_a_full_count_cap_rejects_at_once_and_everyone_else_is_served():
    async def scenario():
        session = SlowSession()
        pool = SessionPool([session], max_queue=2, queue_timeout_s=5)
        tasks = await occupy(pool, 2)
        await assert_refused_at_once(pool)
        session.release.set()
        assert len(await asyncio.gather(*tasks)) == 3 and session.calls == 3
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


class FastSession:
    """A session that takes ``seconds`` per run (sleeping, so runs overlap like real ones)."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls = 0

    def run(self, names, feeds):
        self.calls += 1
        threading.Event().wait(self.seconds)
        return [np.zeros(1)]

    def get_providers(self):
        return ["CPUExecutionProvider"]


def test_a_burst_that_fits_the_expected_wait_is_served_whole():
    """200 cheap requests at once: no count limit refuses any, all 200 run (a count cap of 16
    refused 158 of them)."""
    async def scenario():
        sessions = [FastSession(0.002), FastSession(0.002)]
        pool = SessionPool(sessions, queue_timeout_s=10, run_s=0.002)
        results = await asyncio.gather(*(pool.run({}, 10) for _ in range(200)), return_exceptions=True)
        assert [r for r in results if isinstance(r, BaseException)] == []
        assert sum(s.calls for s in sessions) == 200
        pool.close()

    asyncio.run(scenario())


def test_admission_refuses_once_the_expected_wait_exceeds_the_limit_with_honest_retry_after():
    async def scenario():
        session = SlowSession()
        pool = SessionPool([session], queue_timeout_s=1.0, run_s=0.3)
        tasks = await occupy(pool, 2)  # the waiters are 0.3 s and 0.6 s ahead
        assert pool.admission() is None  # a third waits 0.9 s: fits
        tasks.append(asyncio.create_task(pool.run({}, 5)))
        await asyncio.sleep(0.05)
        refused = pool.admission()  # a fourth would wait 1.2 s
        assert refused is not None and refused.retry_after == "1" and abs(refused.retry_after_s - 0.2) < 1e-6
        await assert_refused_at_once(pool)
        session.release.set()
        assert len(await asyncio.gather(*tasks)) == 4
        pool.close()

    asyncio.run(scenario())


def test_the_run_time_estimate_follows_the_measured_runs():
    async def scenario():
        pool = SessionPool([FastSession(0.05)], queue_timeout_s=5, run_s=1.0)
        for _ in range(20):
            await pool.run({}, 5)
        assert 0.04 < pool.run_s < 0.1
        pool.close()

    asyncio.run(scenario())
