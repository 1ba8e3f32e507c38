"""A short soak of the real server: no server errors, and memory flat after warm-up."""
from __future__ import annotations

import pytest

from benchmarks.bench import Server
from benchmarks.soak import soak

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
