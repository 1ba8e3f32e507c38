"""``poseserve profile``: where a request's CPU time goes inside the real server.

``poseserve bench`` shows the service's latency ÷ bare onnxruntime; this explains the
difference. It starts the service as the bench's latency runs do (one session, one
intra-op thread per model), drives one model with one keep-alive client, samples every
thread of the server with py-spy (a sampling profiler: no instrumentation inside the
process, so the process runs at its normal speed apart from the sampling itself), and
sorts each sample into one category by the frames on its stack. It writes a markdown
table of CPU milliseconds per request (``--out``).

Needs the ``py-spy`` binary (``pip install -e '.[profile]'``) and permission to ptrace
the server (root, or ``kernel.yama.ptrace_scope=0``).
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench import Client, Server, add_common_arguments, default_images

# (category, frames that put a sample in it); the first category whose frame occurs on a
# sample's stack wins, so the order runs from the most specific to the most general.
CATEGORIES: list[tuple[str, tuple[str, ...]]] = [
    ("onnxruntime inference (Session.run)", ("onnxruntime/capi/onnxruntime_inference_collection.py",)),
    ("image decode (Pillow, app.imaging)", ("(app/imaging.py", "(PIL/")),
    ("crop and normalise (app.pipeline.preprocess)", ("preprocess (app/pipeline.py",)),
    ("multipart parsing (python-multipart via Starlette)", ("_get_form (starlette/requests.py",)),
    ("FastAPI parameter solving and validation", ("solve_dependencies (fastapi/dependencies/utils.py",)),
    ("response: pydantic model to JSON", ("json_response (app/routers/pose.py",)),
    ("endpoint code: checks, keypoints (app.routers, app.pipeline)", ("(app/routers/", "(app/pipeline.py")),
    ("ASGI middleware and routing (Starlette, FastAPI, ours)", ("run_asgi (uvicorn/", "(starlette/", "(fastapi/")),
    ("uvicorn HTTP protocol and the asyncio event loop", ("MainThread",)),
    ("worker-thread hand-off (executor queue, GIL)", ("",)),
]


def categorise(stack: str) -> str:
    for name, markers in CATEGORIES:
        if any(marker in stack for marker in markers):
            return name
    raise AssertionError("the last category matches every stack")


def record(pid: int, seconds: float, rate: int) -> tuple[subprocess.Popen, Path]:
    # The venv's own bin (where `pip install` put it) need not be on PATH when poseserve is
    # run by its path, e.g. `.venv/bin/poseserve profile`.
    spy = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if spy is None:
        raise SystemExit("py-spy not found: pip install -e '.[profile]'")
    out = Path(tempfile.mkdtemp()) / "samples.txt"
    proc = subprocess.Popen([spy, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
                             "--threads", "--nonblocking", "--duration", str(int(seconds)),
                             "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    return proc, out


def profile(model_dir: Path, model: str, image: bytes, seconds: float, rate: int
            ) -> tuple[collections.Counter, int, float, int]:
    """(samples per category, requests served while sampling, their mean wall s, rate)."""
    server = Server(model_dir, threads=1)
    try:
        client = Client(server.port)
        for _ in range(50):  # warm-up
            client.pose(model, image)
        spy, out = record(server.proc.pid, seconds, rate)
        time.sleep(1.0)  # py-spy attaches
        start, requests = time.perf_counter(), 0
        while time.perf_counter() - start < seconds - 1.5:
            client.pose(model, image)
            requests += 1
        wall = (time.perf_counter() - start) / requests
        _, err = spy.communicate(timeout=60)
        if spy.returncode != 0 or not out.exists():
            raise SystemExit(f"py-spy failed: {err.decode(errors='replace')[-500:]}")
    finally:
        server.close()
    samples: collections.Counter = collections.Counter()
    for line in out.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        samples[categorise(stack)] += int(count)
    return samples, requests, wall, rate


def report(samples: collections.Counter, requests: int, wall: float, rate: int, seconds: float,
           model: str, image_bytes: int) -> str:
    # py-spy counts running threads only: the idle second before and after the client's
    # run adds (almost) no samples, so CPU per request = samples / rate / requests.
    per_request = 1e3 / rate / requests
    total = sum(samples.values())
    rows = [f"| {name} | {samples[name]} | {samples[name] * per_request:.2f} | {100 * samples[name] / total:.0f}% |"
            for name, _ in CATEGORIES]
    return "\n".join([
        f"# Profile of one request ({dt.date.today().isoformat()})", "",
        f"Measured by `poseserve profile` on {platform.machine()}, {os.cpu_count()} cores: the service "
        f"with one session of one thread per model, model `{model}`, one keep-alive client posting "
        f"the first LSP test image ({image_bytes} bytes) with `heatmaps=none`, py-spy sampling every "
        f"server thread at {rate} Hz for {seconds:.0f} s ({requests} requests, {wall * 1e3:.2f} ms "
        "mean wall time each, as the client saw it). Only samples of running threads count, so "
        "the table is CPU time; inference runs on a worker thread while the event loop waits, so "
        "the CPU per request and the wall time per request differ.", "",
        "| where | samples | CPU ms per request | share |", "|---|---|---|---|", *rows,
        f"| **total** | {total} | {total * per_request:.2f} | 100% |", ""])


def main(args: argparse.Namespace) -> None:
    image = default_images(args.image, args.data)["photo"]
    samples, requests, wall, rate = profile(args.model_dir, args.model, image, args.seconds, args.rate)
    text = report(samples, requests, wall, rate, args.seconds, args.model, len(image))
    Path(args.out).write_text(text)
    print(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--model", default="hourglass")
    p.add_argument("--seconds", type=float, default=30.0)
    p.add_argument("--rate", type=int, default=200,
                   help="samples per second per thread (py-spy shares the cores: 1000 Hz slowed "
                        "requests by a quarter here, 200 Hz by a few percent)")
    p.add_argument("--out", default="docs/profile.md")

