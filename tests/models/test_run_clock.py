"""The training clock charges work, not pauses from outside (models/run_clock.py)."""
from __future__ import annotations

import pytest

from models.run_clock import RunClock


class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def steps(clock: RunClock, fake: FakeTime, durations: list[float]) -> float:
    for d in durations:
        fake.t += d
        clock.tick()
    return clock.elapsed


def test_steady_steps_are_charged_in_full_from_where_a_resumed_run_stopped():
    fake = FakeTime()
    clock = RunClock(elapsed=600.0, now=fake)
    assert steps(clock, fake, [1.5] * 10) == pytest.approx(615.0) and clock.paused == 0


def test_a_stopped_step_counts_as_a_typical_one():
    fake = FakeTime()
    clock = RunClock(now=fake)
    steps(clock, fake, [1.5] * 10)
    # kill -STOP for three minutes in the middle of a step
    assert steps(clock, fake, [181.5]) == pytest.approx(16.5)
    assert clock.paused == pytest.approx(180.0)
    assert steps(clock, fake, [1.5]) == pytest.approx(18.0)


def test_a_busier_machine_is_still_charged():
    """Slower steps (another job on the cores) are real time the run spent: no discount."""
    fake = FakeTime()
    clock = RunClock(now=fake)
    steps(clock, fake, [1.5] * 10)
    assert steps(clock, fake, [4.0] * 5) == pytest.approx(35.0) and clock.paused == 0
    # long steps from the start (a slow model) are never taken for pauses either
    slow = RunClock(now=fake)
    assert steps(slow, fake, [45.0] * 3) == pytest.approx(135.0)


def test_time_before_restart_is_not_charged():
    """Validation between epochs runs between restart() calls."""
    fake = FakeTime()
    clock = RunClock(now=fake)
    steps(clock, fake, [2.0] * 3)
    fake.t += 50.0
    clock.restart()
    assert steps(clock, fake, [2.0]) == pytest.approx(8.0)
