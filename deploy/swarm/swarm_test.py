"""Live test of the swarm deployment, loopback only, bounded in time and requests.

    bash ../shared/tools/docker-local.sh                 # a Docker engine (once)
    python deploy/swarm/swarm_test.py --out docs/swarm.md

Deploys deploy/swarm/stack.yml (3 replicas, dnsrr, HAProxy in front, published on
127.0.0.1:18080 in host mode), drives steady load through the balancer and, phase by
phase: steady state; one replica's container killed mid-load; a rolling update to a new
image tag under load; then throughput with 1 and with 3 replicas. Every request has a
30 s client timeout (a hang counts as a failure). Reports requests sent, failed, status
codes and p50/p99 per phase.
"""
from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STACK = "pose"
SERVICE = f"{STACK}_poseserve"
PORT = 18080


def sh(*cmd: str, env: dict | None = None, check: bool = True) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check and out.returncode:
        raise RuntimeError(f"{' '.join(cmd)}: {out.stderr.strip()[-500:]}")
    return out.stdout.strip()


@dataclass
class Phase:
    name: str
    results: list[tuple[float, object]] = field(default_factory=list)  # (seconds, status | error)
    seconds: float = 0.0

    def row(self) -> str:
        ok = [t for t, s in self.results if s == 200]
        codes: dict[str, int] = {}
        for _, s in self.results:
            codes[str(s)] = codes.get(str(s), 0) + 1
        q = statistics.quantiles(ok, n=100) if len(ok) >= 2 else [float("nan")] * 99
        return (f"| {self.name} | {self.seconds:.0f} | {len(self.results)} | {len(self.results) - len(ok)} | "
                f"{', '.join(f'{k}: {v}' for k, v in sorted(codes.items()))} | {q[49] * 1e3:.0f} | {q[98] * 1e3:.0f} | "
                f"{len(ok) / max(self.seconds, 1e-9):.1f} |")


def post(conn: http.client.HTTPConnection, image: bytes, query: str) -> int:
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n'
            f"Content-Type: image/jpeg\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    conn.request("POST", f"/pose?{query}", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    r = conn.getresponse()
    r.read()
    return r.status


def load(phase: Phase, image: bytes, query: str, clients: int, stop: threading.Event, max_requests: int) -> None:
    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
        while not stop.is_set() and len(phase.results) < max_requests:
            start = time.perf_counter()
            try:
                status: object = post(conn, image, query)
            except Exception as exc:  # noqa: BLE001 - a failed request is a result here
                status = type(exc).__name__
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=30)
            phase.results.append((time.perf_counter() - start, status))

    threads = [threading.Thread(target=worker) for _ in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    phase.seconds = time.perf_counter() - start


def run_phase(name: str, image: bytes, query: str, clients: int, seconds: float, action=None,
              max_requests: int = 20000) -> Phase:
    """Load for ``seconds``; ``action`` runs meanwhile (after 5 s); the phase lasts until both end."""
    phase, stop = Phase(name), threading.Event()
    loader = threading.Thread(target=load, args=(phase, image, query, clients, stop, max_requests))
    loader.start()
    deadline = time.monotonic() + seconds
    if action:
        time.sleep(5)
        action()
    time.sleep(max(0.0, deadline - time.monotonic()))
    stop.set()
    loader.join()
    print(phase.row(), flush=True)
    return phase


def healthy_replicas() -> list[str]:
    return sh("docker", "ps", "-q", "--filter", f"name={SERVICE}.", "--filter", "health=healthy").split()


def wait_ready(replicas: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", PORT, timeout=2)
            c.request("GET", "/readyz")
            if c.getresponse().status == 200 and len(healthy_replicas()) >= replicas:
                return
        except OSError:
            pass
        time.sleep(1)
    raise TimeoutError(f"{replicas} healthy replicas behind the balancer did not appear in {timeout:.0f} s")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--image", type=Path, default=Path(os.environ.get("POSE_DATA_DIR", "../shared/datasets"))
                   / "lsp" / "images" / "im1001.jpg")
    p.add_argument("--query", default="model=hourglass&heatmaps=none&bbox=174,35,160,182")
    p.add_argument("--clients", type=int, default=2)
    p.add_argument("--seconds", type=float, default=25)
    p.add_argument("--skip-build", action="store_true")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    image = args.image.read_bytes()
    if sh("docker", "info", "--format", "{{.Swarm.LocalNodeState}}") != "active":
        sh("docker", "swarm", "init", "--advertise-addr", "127.0.0.1")
    if not args.skip_build:
        sh("docker", "build", "-q", "-t", "poseserve:swarm-a", str(ROOT))
        sh("docker", "build", "-q", "--label", "poseserve.rollout=b", "-t", "poseserve:swarm-b", str(ROOT))
        sh("docker", "build", "-q", "-t", "poseserve-lb:latest", str(ROOT / "deploy" / "swarm" / "haproxy"))
    env = {"POSE_TAG": "swarm-a", "POSE_LB_PORT": str(PORT), "POSE_REPLICAS": "3"}
    sh("docker", "stack", "deploy", "-c", str(ROOT / "deploy" / "swarm" / "stack.yml"), STACK, env=env)
    phases = []
    try:
        wait_ready(3)
        print("| phase | s | sent | failed | codes | p50 ms | p99 ms | ok/s |\n|---|---|---|---|---|---|---|---|")
        phases.append(run_phase("steady, 3 replicas", image, args.query, args.clients, args.seconds))
        victim = healthy_replicas()[0]
        phases.append(run_phase("one replica's container killed at 5 s", image, args.query, args.clients,
                                args.seconds, lambda: sh("docker", "kill", victim)))
        wait_ready(3)
        phases.append(run_phase("rolling update to a new image tag", image, args.query, args.clients, args.seconds,
                                lambda: sh("docker", "service", "update", "--detach=false", "--quiet",
                                           "--image", "poseserve:swarm-b", SERVICE)))
        image_now = sh("docker", "service", "inspect", SERVICE, "--format", "{{.Spec.TaskTemplate.ContainerSpec.Image}}")
        assert image_now.startswith("poseserve:swarm-b"), image_now
        sh("docker", "service", "scale", "--detach=false", f"{SERVICE}=1")
        time.sleep(3)
        wait_ready(1)
        one = run_phase("throughput, 1 replica", image, args.query, 4, args.seconds)
        sh("docker", "service", "scale", "--detach=false", f"{SERVICE}=3")
        wait_ready(3)
        three = run_phase("throughput, 3 replicas", image, args.query, 4, args.seconds)
        phases += [one, three]
    finally:
        sh("docker", "stack", "rm", STACK, check=False)
    rows = [ph.row() for ph in phases]
    ratio = (len([1 for _, s in phases[-1].results if s == 200]) / phases[-1].seconds) / max(
        len([1 for _, s in phases[-2].results if s == 200]) / phases[-2].seconds, 1e-9)
    summary = {ph.name: {"sent": len(ph.results), "failed": sum(1 for _, s in ph.results if s != 200)} for ph in phases}
    print(json.dumps(summary))
    if args.out:
        args.out.write_text(
            "# Docker Swarm: 3 replicas behind HAProxy, tested live\n\n"
            "Measured by `python deploy/swarm/swarm_test.py` on this 2-core machine (loopback only): "
            f"{args.clients} closed-loop clients (4 for the throughput rows) POST the LSP photo im1001 "
            f"(`{args.query}`) to HAProxy on 127.0.0.1:{PORT}, which balances over the swarm service's "
            "tasks (endpoint_mode dnsrr, discovered through Docker's DNS, health-checked on /readyz, "
            "failed requests retried on another replica). Client timeout 30 s: a hang would count as "
            f"a failure. Served hourglass: {json.loads((ROOT / 'models' / 'onnx' / 'hourglass.json').read_text())['input']['size']} px "
            "input, as shipped in models/onnx when the image was built.\n\n| phase | s | sent | failed | codes | p50 ms | p99 ms | ok/s |\n"
            "|---|---|---|---|---|---|---|---|\n" + "\n".join(rows) + "\n\n"
            f"Throughput 3 replicas ÷ 1 replica: **{ratio:.2f}×**. Each replica is limited to 1 CPU, so "
            "one replica uses one of this machine's 2 cores and three share both: the ratio is bounded by "
            "the 2 cores (and by the clients and the balancer, which run on the same cores). On N machines "
            "each replica brings its own cores, so throughput grows ~N× until the balancer or the network "
            "saturates.\n")


if __name__ == "__main__":
    main()
