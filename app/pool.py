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
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np


class Overloaded(Exception):
    """No session became free: the queue was full, or the wait timed out."""


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

    async def run(self, feeds: dict[str, np.ndarray], timeout_s: float) -> tuple[list[np.ndarray], float]:
        """Run one inference on a free session off the event loop; returns (outputs, seconds)."""
        if self._idle.empty() and self._waiting >= self.max_queue:
            raise Overloaded("all sessions busy and the wait queue is full")
        self._waiting += 1
        try:
            session = await asyncio.wait_for(self._idle.get(), self.queue_timeout_s)
        except asyncio.TimeoutError:
            raise Overloaded("timed out waiting for a free session") from None
        finally:
            self._waiting -= 1
        loop = asyncio.get_running_loop()
        start = time.perf_counter()
        future = loop.run_in_executor(self._executor, session.run, None, feeds)
        try:
            outputs = await asyncio.wait_for(asyncio.shield(future), timeout_s)
        except BaseException:  # timeout, or the client went away (cancellation)
            # The thread cannot be interrupted; return the session when it finishes.
            future.add_done_callback(lambda _: self._idle.put_nowait(session))
            raise
        self._idle.put_nowait(session)
        return outputs, time.perf_counter() - start

    def close(self) -> None:
        self._executor.shutdown(wait=True)
