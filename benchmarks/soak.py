"""Soak test: drive the real server with concurrent clients, watch latency, errors and RSS.

Loopback only, bounded in requests and in time, stops by itself. Images vary in size,
format and aspect (the model input stays fixed at the manifest's size, which is what keeps
onnxruntime's memory flat: it caches buffers per input shape). A share of the requests
(``--worst-share``, when POSE_DATA_DIR has coco_dev) are the stress harness's worst memory
cases on its crowded photo, so "no growth after warm-up" covers the requests that grow
memory most. Prints and optionally writes a markdown summary with RSS sampled once a second.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.bench import Server, rss_mb
from benchmarks.stress import CROWD_PHOTO, MEMORY_CASES


def image_pool(n: int = 12, seed: int = 0) -> list[tuple[str, bytes, str]]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        w, h = int(rng.integers(48, 1200)), int(rng.integers(48, 1200))
        img = Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8))
        fmt, mime = [("JPEG", "image/jpeg"), ("PNG", "image/png"), ("WEBP", "image/webp")][i % 3]
        buf = io.BytesIO()
        img.save(buf, fmt)
        out.append((f"i{i}.{fmt.lower()}", buf.getvalue(), mime))
    return out


@dataclass
class SoakResult:
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    worst_statuses: dict[int, int] = field(default_factory=dict)
    errors: int = 0
    rss: list[tuple[float, float]] = field(default_factory=list)

    def summary(self) -> dict:
        lat = np.asarray(self.latencies) * 1e3
        rss = [r for _, r in self.rss]
        quarter = rss[len(rss) // 4] if rss else float("nan")
        return {"requests": len(lat), "p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
                "p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
                "statuses": self.statuses, "worst_case_statuses": self.worst_statuses,
                "transport_errors": self.errors,
                "rss_start_mb": rss[0] if rss else None, "rss_end_mb": rss[-1] if rss else None,
                "rss_max_mb": max(rss) if rss else None,
                "rss_growth_after_warmup_mb": (rss[-1] - quarter) if rss else None}


def soak(url: str, pid: int, clients: int, seconds: float, max_requests: int,
         models: list[str], crowd: bytes | None = None, worst_share: float = 0.0) -> SoakResult:
    """``worst_share`` of the requests are ``MEMORY_CASES`` on the ``crowd`` photo (if given)."""
    import httpx2

    result = SoakResult()
    images = image_pool()
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds
    sent = [0]

    def worker(i: int) -> None:
        rng = np.random.default_rng(i)
        with httpx2.Client(timeout=30) as c:
            while time.monotonic() < stop_at:
                with lock:
                    if sent[0] >= max_requests:
                        return
                    sent[0] += 1
                worst = crowd is not None and rng.random() < worst_share
                if worst:
                    path = MEMORY_CASES[int(rng.integers(len(MEMORY_CASES)))][1]
                    target, params, upload = f"{url}{path}", None, ("crowd.jpg", crowd, "image/jpeg")
                else:
                    upload = images[int(rng.integers(len(images)))]
                    target = f"{url}/pose"
                    params = {"model": models[int(rng.integers(len(models)))],
                              "heatmaps": ["none", "png", "array"][int(rng.integers(3))]}
                t = time.perf_counter()
                try:
                    r = c.post(target, params=params, files={"image": upload})
                    with lock:
                        result.latencies.append(time.perf_counter() - t)
                        result.statuses[r.status_code] = result.statuses.get(r.status_code, 0) + 1
                        if worst:
                            result.worst_statuses[r.status_code] = result.worst_statuses.get(r.status_code, 0) + 1
                except httpx2.TransportError:
                    with lock:
                        result.errors += 1

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    start = time.monotonic()
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        result.rss.append((time.monotonic() - start, rss_mb(pid)))
        time.sleep(1.0)
    for t in threads:
        t.join()
    result.rss.append((time.monotonic() - start, rss_mb(pid)))
    return result


def main(args: argparse.Namespace) -> dict:
    server = Server(args.model_dir, threads=1)
    try:
        import httpx2

        models = [m["id"] for m in httpx2.get(f"{server.url}/models").json()["models"]]
        photo = Path(os.environ.get("POSE_DATA_DIR", "../shared/datasets")) / CROWD_PHOTO
        crowd = photo.read_bytes() if photo.exists() and args.worst_share > 0 else None
        result = soak(server.url, server.proc.pid, args.clients, args.seconds, args.max_requests, models,
                      crowd, args.worst_share)
    finally:
        server.close()
    s = result.summary()
    print(s)
    if args.out:
        rss = ", ".join(f"{t:.0f}s {r:.0f}" for t, r in result.rss[:: max(1, len(result.rss) // 12)])
        worst = ("" if crowd is None else
                 f" {args.worst_share:.0%} of the requests are the worst memory cases of `poseserve stress` "
                 f"(compares of every model and 50-person requests at a low score threshold on `{CROWD_PHOTO}`, "
                 f"13 annotated people): statuses {s['worst_case_statuses']}.")
        Path(args.out).write_text(
            f"# Soak ({dt.date.today().isoformat()})\n\n"
            f"`poseserve soak --clients {args.clients} --seconds {args.seconds:.0f} --worst-share {args.worst_share}"
            f" --out {args.out}` against a real server on loopback: all models, random image sizes and formats, "
            f"heatmaps none/png/array mixed.{worst}\n\n"
            f"| requests | p50 ms | p99 ms | statuses | transport errors | RSS start → end (max) MB | RSS growth after warm-up MB |\n"
            f"|---|---|---|---|---|---|---|\n"
            f"| {s['requests']} | {s['p50_ms']:.1f} | {s['p99_ms']:.1f} | {s['statuses']} | {s['transport_errors']} | "
            f"{s['rss_start_mb']:.0f} → {s['rss_end_mb']:.0f} ({s['rss_max_mb']:.0f}) | {s['rss_growth_after_warmup_mb']:.1f} |\n\n"
            f"RSS over time (MB): {rss}\n")
    return s


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", type=Path, default=Path("models/onnx"))
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=180)
    p.add_argument("--max-requests", type=int, default=100_000)
    p.add_argument("--worst-share", type=float, default=0.1,
                   help="share of requests that are the stress harness's worst memory cases (needs coco_dev)")
    p.add_argument("--out", default="")

