"""The stress harness against a real server, scaled down (short deadlines, small images)."""
from __future__ import annotations

import pytest

from benchmarks.bench import Server
from benchmarks.stress import CROWD_PHOTO, MEMORY_CASES, burst, expensive, memory, rgba_png, stalled
from tests.helpers import DATA

pytestmark = pytest.mark.slow


def test_stress_scenarios_hold_on_a_real_server(model_dir):
    server = Server(model_dir, threads=0, pool=0, POSE_HEADER_TIMEOUT_S="1", POSE_READ_TIMEOUT_S="1",
                    POSE_LARGE_IMAGE_PIXELS="1000000", POSE_MAX_PIXELS="4000000")
    try:
        b = burst(server.port, 100)
        assert b["ok"] == 100, b
        refused = expensive(server.port, server.proc.pid, rgba_png(2000), 2000)  # 5.3 M weighted > 4 M
        assert refused["single_status"] == 413 and refused["attack_statuses"] == {"413": 12}
        served = expensive(server.port, server.proc.pid, rgba_png(1600), 1600)  # in the decode pool
        assert served["single_status"] == 200 and served["attack_statuses"] == {"200": 12}
        assert served["normal_max_s"] < 2 and served["rss_growth_under_attack_mb"] < 1024
        s = stalled(server.port, hangers=10)
        for kind in ("headers", "body"):
            assert s[kind]["answer"].startswith("HTTP/1.1 408") and 0.8 < s[kind]["cut_off_after_s"] < 4, s
        assert s["normal_statuses_while_hanging"] == [200] * 5
        if (DATA / CROWD_PHOTO).exists():
            m = memory(server.port, server.proc.pid, (DATA / CROWD_PHOTO).read_bytes(), rounds=2)
            assert all(c["statuses"] == {"200": 2 * n} for c, (_, _, n) in zip(m["cases"], MEMORY_CASES)), m
            assert m["growth_after_first_round_mb"] < 150, m
    finally:
        server.close()
