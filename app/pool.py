"""A bounded pool of onnxruntime sessions per model.

Why a pool and not one shared session: ``InferenceSession.run`` is thread-safe, but
one session runs one graph at a time at full intra-op width; a few narrower sessions
serve concurrent requests with less contention. The pool also bounds the backlog:
when every session is busy and ``max_queue`` requests already wait, a request is
rejected at once (503 + Retry-After) instead of piling up until clients time out.
"""
from __future__ import annotations

import asyncio
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
    """No session became free: the queue was full, or the wait timed out."""


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
    def __init__(self, sessions: list[Any], max_queue: int, queue_timeout_s: float) -> None:
        self.sessions = sessions
        self.max_queue = max_queue
        self.queue_timeout_s = queue_timeout_s
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

    async def run(self, feeds: Feeds, timeout_s: float) -> RunResult:
        """Make the feeds and run one inference on a free session, off the event loop.

        Exceptions from making the feeds (e.g. a corrupt image) reach the caller as they are.
        """
        if self._idle.empty() and self._waiting >= self.max_queue:
            raise Overloaded("all sessions busy and the wait queue is full")
        session = self._idle.get_nowait() if not self._idle.empty() else await self._wait_for_session()
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, prepare_and_run, session, feeds)
        try:
            result = await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except BaseException:  # a timeout, the client went away, or making the feeds failed
            # A running thread cannot be interrupted; return the session when it finishes.
            future.add_done_callback(lambda _: self._idle.put_nowait(session))
            raise
        self._idle.put_nowait(session)
        return result

    async def _wait_for_session(self) -> Any:
        self._waiting += 1
        try:
            return await asyncio.wait_for(self._idle.get(), self.queue_timeout_s)
        except asyncio.TimeoutError:
            raise Overloaded("timed out waiting for a free session") from None
        finally:
            self._waiting -= 1

    def close(self) -> None:
        self._executor.shutdown(wait=True)
