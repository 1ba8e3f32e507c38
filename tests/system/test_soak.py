"""A short soak of the real server: no server errors, and memory flat after warm-up."""
from __future__ import annotations

import pytest

from benchmarks.bench import Server
from benchmarks.soak import soak
from benchmarks.stress import CROWD_PHOTO
from tests.helpers import DATA

pytestmark = pytest.mark.slow  # real servers / benchmarks / fuzzing: minutes, not seconds


def test_short_soak_has_no_errors_and_flat_memory(model_dir):
    server = Server(model_dir, threads=1)
    try:
        result = soak(server.url, server.proc.pid, clients=4, seconds=20, max_requests=3000,
                      models=["deeppose", "tompson", "cpm", "ief", "hourglass"])
    finally:
        server.close()
    s = result.summary()
    assert s["requests"] > 50
    assert set(s["statuses"]) <= {200, 503}, s["statuses"]  # 503 = shed load, by design
    assert s["statuses"].get(200, 0) >= 0.5 * s["requests"]  # 503s only when the machine is overloaded
    assert s["transport_errors"] == 0
    assert s["rss_growth_after_warmup_mb"] < 25, s


@pytest.mark.skipif(not (DATA / CROWD_PHOTO).exists(), reason="../shared coco_dev not present")
def test_the_soak_mixes_in_the_worst_memory_cases(model_dir):
    server = Server(model_dir, threads=1)
    try:
        result = soak(server.url, server.proc.pid, clients=2, seconds=30, max_requests=6, models=["cpm"],
                      crowd=(DATA / CROWD_PHOTO).read_bytes(), worst_share=1.0)
    finally:
        server.close()
    s = result.summary()
    assert s["requests"] == 6 and sum(s["worst_case_statuses"].values()) == 6, s
    assert s["worst_case_statuses"].get(200, 0) >= 4 and set(s["worst_case_statuses"]) <= {200, 503}, s
