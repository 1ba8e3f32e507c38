"""``poseserve ab``: this checkout's server against another checkout's, request by request.

A speed-up claimed from two benchmark runs minutes apart on a shared machine is mostly
noise. This starts both servers side by side (same models, same settings), sends each
request to A then B, alternating, and reports both p50s and their ratio, per image, so
both servers see the same machine at the same moments.

    git worktree add /tmp/baseline <rev> && poseserve ab --baseline /tmp/baseline [--bbox x,y,w,h]

Both servers load a model directory holding only the compared model, so that an older
checkout, which knows no newer artifact kinds (the person detector), serves the same graph;
``--detector`` adds the person detector for whole-photo requests (``--params``), e.g. the
costliest response, a crowd's float heatmaps with every stage:

    poseserve ab --baseline /tmp/baseline --detector --heatmaps array --n 6 \
        --image ../shared/datasets/coco_dev/images/000000005001.jpg \
        --params "stages=true&max_persons=50&min_person_score=0.05"

Each server's peak RSS is reported beside its latency.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks.bench import (
    WARMUP,
    Client,
    Server,
    add_common_arguments,
    default_images,
    percentile,
    rss_mb,
)

DETECTOR = "person_detector"


def compare(baseline: Path, candidate: Path, model_dir: Path, model: str, images: dict[str, bytes],
            n: int, params: str = "detect=false", heatmaps: str = "none", detector: bool = False
            ) -> tuple[dict[str, tuple[float, float]], tuple[float, float]]:
    """(image label → (baseline p50 s, candidate p50 s), (baseline, candidate) peak RSS MB)."""
    only = Path(tempfile.mkdtemp(prefix="ab-models-"))
    for name in (model, DETECTOR) if detector else (model,):
        for suffix in (".onnx", ".json", ".LICENSE"):
            if suffix != ".LICENSE" or (model_dir / f"{name}{suffix}").exists():
                shutil.copy(model_dir / f"{name}{suffix}", only)
    servers = [Server(only, threads=1, source=baseline), Server(only, threads=1, source=candidate)]
    try:
        clients = [Client(s.port) for s in servers]
        result = {}
        for label, image in images.items():
            samples: list[list[float]] = [[], []]
            for i in range(n + WARMUP):
                for which in (0, 1) if i % 2 else (1, 0):  # alternate who goes first, too
                    start = time.perf_counter()
                    clients[which].pose(model, image, heatmaps, params)
                    if i >= WARMUP:
                        samples[which].append(time.perf_counter() - start)
            result[label] = (percentile(samples[0], 50), percentile(samples[1], 50))
        peaks = tuple(rss_mb(s.proc.pid, "VmHWM") for s in servers)
        return result, peaks
    finally:
        for s in servers:
            s.close()
        shutil.rmtree(only, ignore_errors=True)


def main(args: argparse.Namespace) -> None:
    images = default_images(args.image, args.data)
    where = f"bbox={args.bbox}" if args.bbox else "detect=true" if args.detector else "detect=false"
    params = "&".join(p for p in (where, args.params) if p)
    result, peaks = compare(args.baseline, args.candidate, args.model_dir, args.model, images, args.n, params,
                            args.heatmaps, args.detector)
    print(f"{args.model}, heatmaps={args.heatmaps}, {params}, {args.n} alternating requests per server and image")
    print("| image | baseline p50 ms | candidate p50 ms | candidate ÷ baseline |\n|---|---|---|---|")
    for label, (a, b) in result.items():
        print(f"| {label} | {a * 1e3:.2f} | {b * 1e3:.2f} | {b / a:.2f}× |")
    print(f"peak RSS: baseline {peaks[0]:.0f} MB, candidate {peaks[1]:.0f} MB")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", type=Path, required=True, help="another checkout of poseserve")
    p.add_argument("--candidate", type=Path, default=Path("."), help="default: this checkout")
    add_common_arguments(p)
    p.add_argument("--model", default="hourglass")
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--bbox", help="send this person box (x,y,w,h) with every request; default detect=false")
    p.add_argument("--detector", action="store_true",
                   help="serve the person detector too; requests without --bbox then detect (detect=true)")
    p.add_argument("--heatmaps", choices=("none", "png", "array"), default="none")
    p.add_argument("--params", default="", help="more query parameters, e.g. 'stages=true&max_persons=50'")

