"""``poseserve bench``: latency and throughput, reported as ratios measured in one run.

Absolute times on a shared machine drift with its load; ratios taken minutes apart in the
same process mostly do not. The harness measures, per model:

- bare onnxruntime latency (batch 1, p50/p95) and throughput at batch 8,
- PyTorch eager latency of the same architecture (random weights: speed does not depend
  on their values) and the eager ÷ onnxruntime ratio,
- achieved GFLOP/s against this machine's measured float32 matmul peak,

and, for the service (a real uvicorn server on loopback): HTTP p50 with
``heatmaps=none`` and with ``heatmaps=png`` divided by the bare onnxruntime p50 under the
same thread settings, throughput at 1/2/4/8 concurrent clients, and where the time goes
(the response's ``timing_ms``). It writes a markdown table (``--out``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


def timed(fn, n: int, warmup: int = 5) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def matmul_peak_gflops(threads: int) -> float:
    """Best float32 GEMM rate numpy reaches here (the machine's practical peak)."""
    a = np.random.rand(1024, 1024).astype(np.float32)
    best = min(timed(lambda: a @ a, 10, warmup=3))
    return 2 * 1024**3 / best / 1e9


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def torch_latency(manifest: dict, threads: int, n: int) -> float | None:
    try:
        import torch

        from models.architectures import build_model
    except ImportError:
        return None
    torch.set_num_threads(threads)
    width = manifest.get("training", {}).get("width")
    kwargs = {"width": width} if width else {}
    from models.inference import InferenceGraph

    arch = manifest.get("base_model", manifest["id"])  # int8 variants: the fp32 architecture
    model = InferenceGraph(build_model(arch, input_size=manifest["input"]["size"], **kwargs),
                           flip_test=bool(manifest.get("flip_test"))).eval()
    x = torch.zeros(1, 3, manifest["input"]["size"], manifest["input"]["size"])
    with torch.inference_mode():
        return percentile(timed(lambda: model(x), n), 50)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """The real service in a subprocess on loopback, one session of ``threads`` threads per model."""

    def __init__(self, model_dir: Path, threads: int, **extra_env: str) -> None:
        self.port = free_port()
        env = dict(os.environ, POSE_MODEL_DIR=str(model_dir), POSE_POOL_SIZE="1",
                   POSE_INTRA_OP_THREADS=str(threads), POSE_MAX_QUEUE="64", **extra_env)
        self.proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1",
                                      "--port", str(self.port)], env=env,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        import httpx

        for _ in range(300):
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError("server did not start")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def http_latency(client, url: str, image: bytes, params: dict, n: int) -> tuple[list[float], list[dict]]:
    timings = []

    def call():
        r = client.post(f"{url}/pose", params=params, files={"image": ("p.jpg", image, "image/jpeg")})
        r.raise_for_status()
        timings.append(r.json()["timing_ms"])

    return timed(call, n), timings[5:]


def throughput(url: str, image: bytes, model: str, clients: int, seconds: float) -> float:
    import httpx

    done = [0] * clients
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        with httpx.Client(timeout=30) as c:
            while time.perf_counter() < stop:
                r = c.post(f"{url}/pose", params={"model": model, "heatmaps": "none"},
                           files={"image": ("p.jpg", image, "image/jpeg")})
                done[i] += r.status_code == 200

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - start)


def main(args: argparse.Namespace) -> None:
    import httpx

    model_dir: Path = args.model_dir
    manifests = {p.stem: json.loads(p.read_text()) for p in sorted(model_dir.glob("*.json"))}
    image = Path(args.image).read_bytes() if args.image else _default_image()
    threads = args.threads
    peak = matmul_peak_gflops(threads)
    rows, service_rows, breakdown = [], [], []
    server = Server(model_dir, threads)
    try:
        with httpx.Client(timeout=30) as client:
            for model_id, man in manifests.items():
                session = ort_session(model_dir / man["onnx"], threads)
                size = man["input"]["size"]
                x1 = np.random.rand(1, 3, size, size).astype(np.float32)
                x8 = np.random.rand(8, 3, size, size).astype(np.float32)
                lat1 = timed(lambda: session.run(None, {"image": x1}), args.n)
                lat8 = timed(lambda: session.run(None, {"image": x8}), max(10, args.n // 4))
                ort_p50 = percentile(lat1, 50)
                eager = torch_latency(man, threads, args.n)
                http_none, t_none = http_latency(client, server.url, image,
                                                 {"model": model_id, "heatmaps": "none"}, args.n)
                http_png, _ = http_latency(client, server.url, image,
                                           {"model": model_id, "heatmaps": "png"}, args.n)
                rows.append([model_id, f"{man['params'] / 1e6:.2f} M", f"{man['flops'] / 1e9:.3f}",
                             f"{ort_p50 * 1e3:.2f}", f"{percentile(lat1, 95) * 1e3:.2f}",
                             f"{8 / percentile(lat8, 50):.0f}",
                             f"{eager / ort_p50:.2f}×" if eager else "n/a",
                             f"{man['flops'] / ort_p50 / 1e9:.1f} ({100 * man['flops'] / ort_p50 / 1e9 / peak:.0f}%)"])
                service_rows.append([model_id, f"{percentile(http_none, 50) * 1e3:.2f}",
                                     f"{percentile(http_none, 50) / ort_p50:.2f}×",
                                     f"{percentile(http_png, 50) / ort_p50:.2f}×"])
                keys = ("decode", "preprocess", "inference", "postprocess", "total")
                breakdown.append([model_id, *(f"{statistics.median(t[k] for t in t_none):.2f}" for k in keys)])
                print(model_id, rows[-1], service_rows[-1], flush=True)
            default = "hourglass" if "hourglass" in manifests else next(iter(manifests))
            conc = [(c, throughput(server.url, image, default, c, args.seconds)) for c in (1, 2, 4, 8)]
    finally:
        server.close()
    batched = Server(model_dir, threads, POSE_MICRO_BATCH="8", POSE_MICRO_BATCH_WAIT_MS="2")
    try:
        conc_batched = [(c, throughput(batched.url, image, default, c, args.seconds)) for c in (1, 2, 4, 8)]
    finally:
        batched.close()
    lines = [f"# Benchmarks ({dt.date.today().isoformat()})", "",
             f"Measured by `python -m benchmarks.bench` in one run on {platform.machine()}, "
             f"{os.cpu_count()} cores, onnxruntime CPU provider, {threads} intra-op thread(s); "
             f"float32 matmul peak measured here: **{peak:.1f} GFLOP/s**. "
             f"Test image: {len(image)} bytes JPEG. Times are p50 over {args.n} runs; read the ratios, "
             "the absolute values move with the machine's load.", "",
             "## Models (bare onnxruntime)", "",
             "| model | params | GFLOPs | ORT p50 ms (batch 1) | ORT p95 ms | img/s at batch 8 | PyTorch eager ÷ ORT | achieved GFLOP/s (% of matmul peak) |",
             "|---|---|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    lines += ["", "## Service overhead (real HTTP server on loopback, one client)", "",
              "| model | HTTP p50 ms (heatmaps=none) | ÷ bare ORT p50 (none) | ÷ bare ORT p50 (png) |",
              "|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in service_rows]
    lines += ["", "## Where the time goes (median `timing_ms`, heatmaps=none)", "",
              "| model | decode | preprocess | inference | postprocess | total (server side) |", "|---|---|---|---|---|---|"]
    lines += ["| " + " | ".join(r) + " |" for r in breakdown]
    lines += ["", f"## Throughput vs concurrent clients ({default}, heatmaps=none, {args.seconds:.0f} s each)", "",
              "| clients | req/s | ÷ 1 client |", "|---|---|---|"]
    lines += [f"| {c} | {rps:.1f} | {rps / conc[0][1]:.2f}× |" for c, rps in conc]
    lines += ["", "## Micro-batching (POSE_MICRO_BATCH=8, 2 ms window) vs off, same model", "",
              "| clients | req/s off | req/s on | on ÷ off |", "|---|---|---|---|"]
    lines += [f"| {c} | {a:.1f} | {b:.1f} | {b / a:.2f}× |" for (c, a), (_, b) in zip(conc, conc_batched)]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _default_image() -> bytes:
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", type=Path, default=Path("models/onnx"))
    p.add_argument("--image", help="JPEG to send (default: a 400x300 synthetic JPEG)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--n", type=int, default=100, help="timed runs per measurement")
    p.add_argument("--seconds", type=float, default=5.0, help="per concurrency level")
    p.add_argument("--out", default="docs/benchmarks.md")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    main(parser.parse_args())
