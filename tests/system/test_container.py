"""The serving image under the Swarm replica's limits (1 CPU, 1.25 GiB, no swap) survives the
worst requests the API accepts. Needs a Docker engine with ``poseserve:latest`` built
(``bash ../shared/tools/docker-local.sh && docker build -t poseserve .``); skipped without."""
from __future__ import annotations

import pytest

from benchmarks.container import DEPLOYMENTS, engine_ready, under_limits
from benchmarks.stress import CROWD_PHOTO, MEMORY_CASES
from tests.helpers import DATA

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not engine_ready("poseserve:latest"), reason="no Docker engine with poseserve:latest"),
              pytest.mark.skipif(not (DATA / CROWD_PHOTO).exists(), reason="../shared coco_dev not present")]


def test_the_smallest_replica_answers_the_worst_requests_without_being_killed():
    swarm = next(d for d in DEPLOYMENTS if d.name == "swarm")
    r = under_limits("poseserve:latest", swarm, (DATA / CROWD_PHOTO).read_bytes(), rounds=1, burst_size=40)
    cases = r["memory_cases"]["cases"]
    assert [c["statuses"] for c in cases] == [{"200": n} for _, _, n in MEMORY_CASES], cases
    assert r["burst_default_path"]["ok"] == 40, r["burst_default_path"]
    assert not r["oom_killed"] and r["running"] and r["restarts"] == 0, r
    # The headroom the limit was set with, on the server's own peak RSS. The cgroup's peak also
    # counts the page cache of the files the server read, which the kernel reclaims before it
    # kills anything and which varies from run to run (840-1026 MB over five runs of this test
    # on one machine; in one, the server's RSS peaked at 856 MB while the cgroup's reached
    # 1026), so it is held only under the limit itself.
    assert r["memory_cases"]["peak_mb"] < swarm.memory_mb * 0.75, r["memory_cases"]
    assert r["cgroup_peak_mb"] < swarm.memory_mb, r
