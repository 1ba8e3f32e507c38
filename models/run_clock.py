"""The training budget's clock: wall-clock seconds the run spent working, not stopped.

Training is budgeted in minutes (``models.train``), and on a shared machine the trainer is
paused (``kill -STOP``) while a benchmark or a test needs clean timings. A plain wall clock
would charge those pauses to the run: it would anneal its learning rate early and stop with
epochs unspent. This clock is ticked once per optimiser step; a step that took both longer
than ``stall`` seconds and ``factor`` times the median of recent steps was stopped from
outside, and counts as a typical step. A machine that merely gets busier (steps 2-3× slower)
is still charged in full: the budget is time, not work.
"""
from __future__ import annotations

import statistics
import time
from collections import deque
from typing import Callable


class RunClock:
    def __init__(self, elapsed: float = 0.0, stall: float = 30.0, factor: float = 20.0,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.elapsed = elapsed
        self.paused = 0.0  # seconds not charged, for the log
        self._stall, self._factor, self._now = stall, factor, now
        self._recent: deque[float] = deque(maxlen=50)
        self._last = now()

    def restart(self) -> None:
        """Start timing from now (after work that is not charged, such as validation)."""
        self._last = self._now()

    def tick(self) -> float:
        """Charge the step that just ended; the elapsed seconds so far."""
        now = self._now()
        step, self._last = now - self._last, now
        typical = statistics.median(self._recent) if self._recent else None
        if typical is not None and step > max(self._stall, self._factor * typical):
            self.paused += step - typical
            step = typical
        else:
            self._recent.append(step)
        self.elapsed += step
        return self.elapsed
