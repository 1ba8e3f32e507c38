"""``poseserve container-memory``: the serving image under each deployment's limits, hit with
the worst requests the API accepts.

Why a container: the memory figures in ``poseserve stress`` are one process's RSS, but what
kills a replica is its cgroup's limit, which also counts the page cache and the sized
``/tmp`` tmpfs where large uploads spool. So this starts the built image exactly as a
deployment does (CPU quota, memory limit with no swap, read-only root, ``/tmp`` tmpfs),
waits for ``/readyz``, sends ``poseserve stress``'s memory cases (compares of every model on
a crowded photo, 50 people at a low score threshold, ``heatmaps=array`` with
``stages=true``, four compares at once) and the 200-request default-path burst, then reads
the cgroup's peak usage and whether the kernel killed anything. One setting differs from the
deployed one: ``POSE_QUEUE_TIMEOUT_S`` (``ADMIT_ALL``), so that every one of those requests
is admitted and runs at once, the most memory they can take; deployed (10 s), a slow
machine refuses some of them with 503 + Retry-After instead. Needs a Docker engine
(``bash ../shared/tools/docker-local.sh`` on a machine without one) and the image
(``docker build -t poseserve .``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from benchmarks.stress import CROWD_PHOTO, burst, memory, small_person_jpeg


@dataclass(frozen=True)
class Limits:
    """One deployment's per-replica limits, as its file sets them."""

    name: str
    where: str
    cpus: str
    memory: str  # docker's notation: 2g, 1280m

    @property
    def memory_mb(self) -> float:
        return memory_mb(self.memory)


def memory_mb(limit: str) -> float:
    """A memory limit as docker, compose and Swarm write it (``2g``, ``1280M``) in MiB."""
    return float(limit[:-1]) * {"g": 1024, "m": 1}[limit[-1].lower()]


# Long enough that no request of the cases is refused for its expected wait (the admission
# that sheds load, ``app.pool``): what is measured is the memory of all of them running.
ADMIT_ALL = {"POSE_QUEUE_TIMEOUT_S": "600"}

DEPLOYMENTS = (
    Limits("compose", "docker-compose.yml (POSE_CPUS / POSE_MEMORY defaults); the Kubernetes pods' limits too", "2", "2g"),
    Limits("swarm", "deploy/swarm/stack.yml, per replica", "1", "1280m"),
)


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], check=True, capture_output=True, text=True).stdout.strip()


def engine_ready(image: str) -> bool:
    """A running engine with the image built: what this benchmark (and its test) needs."""
    try:
        docker("image", "inspect", image)
        return True
    except (OSError, subprocess.CalledProcessError):
        return False


class Container:
    """The image started as a deployment starts it, under ``limits``; removed on close."""

    def __init__(self, image: str, limits: Limits, env: dict[str, str] | None = None) -> None:
        flags = [f"--cpus={limits.cpus}", f"--memory={limits.memory}", f"--memory-swap={limits.memory}",
                 "--read-only", "--tmpfs", "/tmp:size=256m,mode=1777", "--cap-drop=ALL",
                 "--security-opt=no-new-privileges:true", "--pids-limit=256", "-p", "127.0.0.1::8000"]
        for k, v in (env or {}).items():
            flags += ["-e", f"{k}={v}"]
        self.id = docker("run", "-d", *flags, image)
        self.port = int(docker("port", self.id, "8000/tcp").splitlines()[0].rsplit(":", 1)[1])
        self.pid = int(docker("inspect", "-f", "{{.State.Pid}}", self.id))

    def wait_ready(self, timeout: float = 180) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2) as r:
                    if r.status == 200:
                        return time.monotonic() - start
            except OSError:
                pass
            if self.state()["Status"] != "running":
                break
            time.sleep(0.5)
        raise RuntimeError(f"container not ready: {self.state()} {docker('logs', '--tail', '20', self.id)}")

    def state(self) -> dict:
        return json.loads(docker("inspect", "-f", "{{json .State}}", self.id))

    def cgroup_peak_mb(self) -> float | None:
        """The cgroup's peak memory use (v1 ``memory.max_usage_in_bytes``, v2 ``memory.peak``)."""
        long_id = docker("inspect", "-f", "{{.Id}}", self.id)
        for path in (f"/sys/fs/cgroup/memory/docker/{long_id}/memory.max_usage_in_bytes",
                     f"/sys/fs/cgroup/system.slice/docker-{long_id}.scope/memory.peak",
                     f"/sys/fs/cgroup/docker/{long_id}/memory.peak"):
            if os.path.exists(path):
                return int(Path(path).read_text()) / 2**20
        return None

    def close(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.id], capture_output=True)


def under_limits(image: str, limits: Limits, photo: bytes, rounds: int = 3, burst_size: int = 200) -> dict:
    """The memory cases and the default-path burst in one container, every request admitted
    (``ADMIT_ALL``); its peak and its fate."""
    box = Container(image, limits, ADMIT_ALL)
    try:
        ready_s = box.wait_ready()
        mem = memory(box.port, box.pid, photo, rounds)
        b = burst(box.port, burst_size, "/pose?heatmaps=none", small_person_jpeg())
        state = box.state()
        return {"deployment": limits.name, "where": limits.where, "cpus": limits.cpus, "memory": limits.memory,
                "ready_s": round(ready_s, 1), "memory_cases": mem, "burst_default_path": b,
                "cgroup_peak_mb": round(box.cgroup_peak_mb() or float("nan")),
                "oom_killed": state["OOMKilled"], "running": state["Status"] == "running",
                "restarts": int(docker("inspect", "-f", "{{.RestartCount}}", box.id))}
    finally:
        box.close()


def markdown(results: list[dict], image_mb: float, command: str) -> str:
    rows = []
    for r in results:
        cases = r["memory_cases"]
        statuses: dict[str, int] = {}
        for c in cases["cases"]:
            for s, n in c["statuses"].items():
                statuses[s] = statuses.get(s, 0) + n
        b = r["burst_default_path"]
        rows.append(f"| {r['deployment']} | {r['cpus']} | {r['memory']} | {r['ready_s']} | {cases['rss_at_start_mb']} | "
                    f"{cases['peak_mb']} | {r['cgroup_peak_mb']} | {statuses} | {b['ok']}/{b['requests']} | "
                    f"{'**yes**' if r['oom_killed'] else 'no'} |")
    wheres = "\n".join(f"- {r['deployment']}: {r['where']}" for r in results)
    cgroup_margin = min(memory_mb(r["memory"]) / r["cgroup_peak_mb"] for r in results)
    rss_margin = min(memory_mb(r["memory"]) / r["memory_cases"]["peak_mb"] for r in results)
    return f"""# The serving image under its deployment limits ({dt.date.today().isoformat()})

`{command}`: the image (`poseserve:latest`, {image_mb:.0f} MB) started as each deployment
starts it: CPU quota, memory limit with no swap, read-only root, 256 MB `/tmp` tmpfs;
`POSE_QUEUE_TIMEOUT_S=600`, so that no request is refused for its expected wait and all of
them run (deployed, with 10 s, a slow machine answers some with 503 + Retry-After instead,
which takes less memory). Each container then gets the worst requests the API accepts on a crowded everyday photo
(`{CROWD_PHOTO}`), three rounds of each: a compare of every model, a compare of up to 50
people at score ≥ 0.05, `heatmaps=array&stages=true` for 50 people, four such compares at
once; then 200 default-path requests (detector, then pose) released at once.

{wheres}

| deployment | CPUs | memory limit | ready after s | server RSS at start MB | server RSS peak MB | cgroup peak MB | memory-case statuses | burst 200 | killed for memory |
|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

The cgroup peak is what the limit is measured against: the server's memory plus the
page cache of the files it read and anything spooled to `/tmp` (the server's RSS counts
the mapped model files too, so it can read higher). Each limit is at least
{cgroup_margin:.2f}× the measured cgroup peak and {rss_margin:.2f}× the server's RSS peak; the page
cache varies from run to run and the kernel reclaims it before it kills anything. The worst
cases come from the activations of a crowd's crops, run in chunks of `POSE_MAX_BATCH`,
which do not shrink with the CPU quota.
"""


def main(args: argparse.Namespace) -> list[dict]:
    photo_path = Path(os.environ.get("POSE_DATA_DIR", "../shared/datasets")) / CROWD_PHOTO
    if not engine_ready(args.image):
        raise SystemExit(f"poseserve container-memory: no Docker engine with the image {args.image!r} "
                         "(bash ../shared/tools/docker-local.sh; docker build -t poseserve .)")
    if not photo_path.exists():
        raise SystemExit(f"poseserve container-memory: {photo_path} not found (set POSE_DATA_DIR)")
    results = []
    for limits in DEPLOYMENTS:
        results.append(under_limits(args.image, limits, photo_path.read_bytes(), args.rounds))
        print(json.dumps({k: v for k, v in results[-1].items() if k != "memory_cases"}), flush=True)
    if args.out:
        image_mb = int(docker("image", "inspect", "-f", "{{.Size}}", args.image)) / 1e6
        Path(args.out).write_text(markdown(results, image_mb, f"poseserve container-memory --out {args.out}"))
        Path(args.out).with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    return results


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--image", default="poseserve:latest")
    p.add_argument("--rounds", type=int, default=3, help="rounds of each memory case")
    p.add_argument("--out", default="", help="markdown report (a .json beside it)")
