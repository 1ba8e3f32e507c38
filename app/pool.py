"""A bounded pool of onnxruntime sessions per model.

Why a pool and not one shared session: ``InferenceSession.run`` is thread-safe, but
one session runs one graph at a time at full intra-op width; a few narrower sessions
serve concurrent requests with less contention.

Admission is by expected wait, not by a count: a request queues while the backlog ahead
of it, served ``len(sessions)`` at a time at the recent run time, fits in
``queue_timeout_s``; beyond that it is refused at once with an honest Retry-After. A
count would be wrong both ways: 16 waiting 3 ms requests is 24 ms of work (refusing
the 17th is needless), 16 waiting 2 s batches is 16 s (admitting them breaks every
client's timeout). ``app.admission`` asks the same question before a body is read.
"""
from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np

# Feeds, or a function that makes them. A function runs on the session's own worker
# thread just before inference, so a request crosses from the event loop to a thread
# and back once (each crossing costs a thread wake-up, a visible share of a 3 ms model).
Feeds = dict[str, np.ndarray] | Callable[[], dict[str, np.ndarray]]


class Overloaded(Exception):
    """No session will be free in time: ``retry_after_s`` is when the backlog should fit again."""

    def __init__(self, reason: str, retry_after_s: float = 1.0) -> None:
        super().__init__(reason)
        self.retry_after_s = retry_after_s

    @property
    def retry_after(self) -> str:
        """The Retry-After header value: whole seconds, at least 1."""
        return str(max(1, math.ceil(self.retry_after_s)))


class RunResult(NamedTuple):
    outputs: list[np.ndarray]
    prepare_s: float  # making the feeds (0 when they were given ready-made)
    infer_s: float  # the onnxruntime run itself


def prepare_and_run(session: Any, feeds: Feeds) -> RunResult:
    start = time.perf_counter()
    ready = feeds() if callable(feeds) else feeds
    mid = time.perf_counter()
    outputs = session.run(None, ready)
    return RunResult(outputs, mid - start, time.perf_counter() - mid)


class SessionPool:
    # Weight of the newest run in the running mean of run time: adapts within ~10 runs.
    RUN_TIME_SMOOTHING = 0.2

    def __init__(self, sessions: list[Any], queue_timeout_s: float, max_queue: int = 0,
                 run_s: float = 0.01) -> None:
        self.sessions = sessions
        self.max_queue = max_queue  # 0 = no count cap
        self.queue_timeout_s = queue_timeout_s
        self.run_s = run_s  # running mean of one run (feeds + inference), seeded by the warm-up
        self._idle: asyncio.Queue = asyncio.Queue()
        for s in sessions:
            self._idle.put_nowait(s)
        self._waiting = 0
        self._executor = ThreadPoolExecutor(len(sessions), thread_name_prefix="ort")

    @property
    def providers(self) -> list[str]:
        """The providers each session *actually* runs on (ORT may fall back to CPU)."""
        return list(self.sessions[0].get_providers())

    @property
    def busy(self) -> int:
        return len(self.sessions) - self._idle.qsize()

    def expected_wait_s(self) -> float:
        """How long a request arriving now would wait for a session (0 when one is idle)."""
        if not self._idle.empty():
            return 0.0
        return (self._waiting + 1) * self.run_s / len(self.sessions)

    def over_limit(self, wait: float) -> Overloaded | None:
        """The refusal for an expected ``wait`` beyond ``queue_timeout_s`` (None within it)."""
        if wait <= self.queue_timeout_s:
            return None
        return Overloaded(f"expected wait {wait:.1f} s exceeds the {self.queue_timeout_s:g} s limit",
                          wait - self.queue_timeout_s)

    def admission(self) -> Overloaded | None:
        """Why a request arriving now would be refused, or None when it fits."""
        refused = self.over_limit(self.expected_wait_s())
        if refused is not None:
            return refused
        if self.max_queue and self._waiting >= self.max_queue and self._idle.empty():
            return Overloaded("all sessions busy and the wait queue is full", self.run_s)
        return None

    async def run(self, feeds: Feeds, timeout_s: float) -> RunResult:
        """Make the feeds and run one inference on a free session, off the event loop.

        Exceptions from making the feeds (e.g. a corrupt image) reach the caller as they are.
        """
        refused = self.admission()
        if refused is not None:
            raise refused
        session = self._idle.get_nowait() if not self._idle.empty() else await self._wait_for_session()
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        future = loop.run_in_executor(self._executor, prepare_and_run, session, feeds)
        try:
            result = await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except BaseException:  # a timeout, the client went away, or making the feeds failed
            # A running thread cannot be interrupted; return the session when it finishes.
            future.add_done_callback(lambda _: self._idle.put_nowait(session))
            raise
        self._idle.put_nowait(session)
        a = self.RUN_TIME_SMOOTHING
        self.run_s = (1 - a) * self.run_s + a * (time.perf_counter() - start)
        return result

    async def _wait_for_session(self) -> Any:
        self._waiting += 1
        try:
            return await asyncio.wait_for(self._idle.get(), self.queue_timeout_s)
        except asyncio.TimeoutError:
            raise Overloaded("timed out waiting for a free session", self.run_s) from None
        finally:
            self._waiting -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=True)
