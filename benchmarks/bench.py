"""``poseserve bench``: latency and throughput, reported as ratios measured in one run.

Absolute times on a shared machine drift with its load; ratios taken minutes apart in the
same process mostly do not. The harness measures, per served model:

- bare onnxruntime latency (batch 1, p50/p95; plain ``run`` and with IOBinding) and
  throughput at batch 8, on a session configured exactly as the service's,
- PyTorch eager latency of the same architecture (random weights: speed does not depend
  on their values) and the eager ÷ onnxruntime ratio,
- achieved GFLOP/s against this machine's measured float32 matmul peak,

and, for the service (a real uvicorn server on loopback, one keep-alive client):

- HTTP p50 with ``heatmaps=none`` and ``heatmaps=png`` ÷ the bare onnxruntime p50, for a
  typical photo (the first LSP test image) and a worst-case JPEG (400×300 of noise, which
  no DCT compresses: the costliest decode per pixel),
- where the time of one request goes: bare inference, image decode/crop (``app.pipeline.
  preprocess`` timed alone), the HTTP round-trip floor (``GET /healthz``), the rest,
- throughput at 1/2/4/8 concurrent clients, with and without micro-batching.

The client is ``http.client`` (keep-alive, hand-built multipart): a heavier client
library would add its own milliseconds to every sample, on the same two cores.
It writes a markdown report (``--out``).
"""
from __future__ import annotations

import argparse
import datetime as dt
import http.client
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from models.manifest import PoseManifest

TYPICAL_PHOTO = Path("lsp") / "images" / "im1001.jpg"  # the first LSP test image, never trained on


def percentile(xs: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q))


WARMUP = 5
ROUNDS = 5  # each latency is sampled in this many blocks, interleaved with the others


def timed(fn, n: int, warmup: int = WARMUP) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def matmul_peak_gflops() -> float:
    """Best float32 GEMM rate numpy reaches here (the machine's practical peak)."""
    a = np.random.rand(1024, 1024).astype(np.float32)
    best = min(timed(lambda: a @ a, 10, warmup=3))
    return 2 * 1024**3 / best / 1e9


def torch_latency(manifest, threads: int, n: int) -> float | None:
    """PyTorch eager p50 of the same inference graph on CPU, or None without torch."""
    try:
        import torch

        from models.architectures import build_model
        from models.checkpoint import builder_options
        from models.inference import InferenceGraph
    except ImportError:
        return None
    torch.set_num_threads(threads)
    training = manifest.training or {}
    options = builder_options({"arch": training.get("arch"), "width": training.get("width")})
    arch = manifest.base_model or manifest.id  # variants: the fp32 architecture
    size = manifest.input.size
    decoding = manifest.heatmap_decoding
    model = InferenceGraph(build_model(arch, input_size=size, **options), flip_test=manifest.flip_test,
                           refine=decoding.refine, sigma=decoding.sigma).eval()
    x = torch.zeros(1, 3, size, size)
    with torch.inference_mode():
        return percentile(timed(lambda: model(x), n), 50)


def iobinding_runner(session, x: np.ndarray):
    """``run_with_iobinding`` with the input placed once on the session's device.

    On CUDA this is what keeps a benchmark from timing host↔device copies of the input;
    on CPU it shows what the binding API itself costs.
    """
    import onnxruntime as ort

    device = "cuda" if session.get_providers()[0] == "CUDAExecutionProvider" else "cpu"
    binding = session.io_binding()
    binding.bind_ortvalue_input("image", ort.OrtValue.ortvalue_from_numpy(x, device, 0))
    for out in session.get_outputs():
        binding.bind_output(out.name, device)
    return lambda: session.run_with_iobinding(binding)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int, field: str = "VmRSS") -> float:
    """A process's resident memory, from /proc (Linux), in MB; ``field="VmHWM"``: its peak."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class Server:
    """The real service in a subprocess on loopback: ``pool`` sessions of ``threads`` threads
    per model (0 = the service's own defaults, derived from the CPU quota)."""

    def __init__(self, model_dir: Path, threads: int, pool: int = 1, source: Path | None = None,
                 graceful_timeout: int = 20, **extra_env: str) -> None:
        """``source``: serve the code of another checkout of this project (A/B comparisons)."""
        self.port = free_port()
        env = dict(os.environ, POSE_MODEL_DIR=str(Path(model_dir).resolve()), POSE_POOL_SIZE=str(pool),
                   POSE_INTRA_OP_THREADS=str(threads), **extra_env)
        if source is not None:
            env["PYTHONPATH"] = str(Path(source).resolve())
        # older checkouts (before the command table) start from app.cli
        entry = "poseserve" if source is None or (Path(source) / "poseserve.py").exists() else "app.cli"
        self.proc = subprocess.Popen([sys.executable, "-m", entry, "serve", "--host", "127.0.0.1",
                                      "--port", str(self.port), "--graceful-timeout", str(graceful_timeout)],
                                     env=env, cwd=source,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(300):
            try:
                if Client(self.port).get("/readyz")[0] == 200:
                    return
            except OSError:
                pass
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        self.close()  # never leave a half-started server behind on the shared cores
        raise RuntimeError("server did not start")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


def multipart(image: bytes, filename: str = "p.jpg", mime: str = "image/jpeg", field: str = "image"
              ) -> tuple[bytes, str]:
    """A multipart/form-data body with ``image`` as its one file ``field``: (body, Content-Type)."""
    boundary = uuid.uuid4().hex
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            f"Content-Type: {mime}\r\n\r\n").encode() + image + f"\r\n--{boundary}--\r\n".encode()
    return body, f"multipart/form-data; boundary={boundary}"


class Client:
    """One keep-alive loopback connection; the thinnest client Python offers."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        for attempt in (1, 2):
            try:
                self.conn.request(method, path, body=body, headers=headers or {})
                r = self.conn.getresponse()
                return r.status, r.read()
            except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected):
                # the server closed an idle keep-alive connection (uvicorn: after 5 s)
                self.conn.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def get(self, path: str) -> tuple[int, bytes]:
        return self.request("GET", path)

    def post_image(self, path: str, image: bytes) -> tuple[int, bytes]:
        body, content_type = multipart(image)
        return self.request("POST", path, body, {"Content-Type": content_type})

    def pose(self, model: str, image: bytes, heatmaps: str = "none", params: str = "detect=false") -> dict:
        """One /pose request. ``detect=false`` by default: the pose model on the whole image,
        so these numbers compare with the bare pose graph (benchmarks/people.py measures detection)."""
        status, body = self.post_image(f"/pose?model={model}&heatmaps={heatmaps}&{params}", image)
        if status != 200:
            raise RuntimeError(f"/pose answered {status}: {body[:200]!r}")
        return json.loads(body)


def http_latency(client: Client, model: str, image: bytes, heatmaps: str, n: int
                 ) -> tuple[list[float], list[dict]]:
    timings: list[dict] = []
    samples = timed(lambda: timings.append(client.pose(model, image, heatmaps)["timing_ms"]), n, warmup=WARMUP)
    return samples, timings[WARMUP:]


def throughput(port: int, image: bytes, model: str, clients: int, seconds: float) -> float:
    done = [0] * clients
    stop = time.perf_counter() + seconds

    def worker(i: int) -> None:
        client = Client(port)
        while time.perf_counter() < stop:
            status, _ = client.post_image(f"/pose?model={model}&heatmaps=none&detect=false", image)
            done[i] += status == 200

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(done) / (time.perf_counter() - start)


@dataclass
class ModelResult:
    id: str
    manifest: PoseManifest
    ort: list[float]  # bare run(), batch 1, seconds
    ort_bound: list[float]  # run_with_iobinding
    ort_batch8: float
    eager: float | None
    http: dict[str, float]  # "<image>/<heatmaps>" → p50 seconds
    preprocess: dict[str, float]  # image → p50 seconds of app.pipeline.preprocess alone
    timing: list[dict]  # the service's timing_ms for the photo, heatmaps=none

    @property
    def ort_p50(self) -> float:
        return percentile(self.ort, 50)


def measure_model(path: Path, settings, client: Client, images: dict[str, bytes], n: int,
                  threads: int) -> ModelResult | None:
    from app import pipeline
    from app.registry import ModelSkipped, load_model
    from app.uploads import Upload

    try:
        m = load_model(path, settings)  # the service's own loader: same session options
    except ModelSkipped:
        return None
    session = m.pool.sessions[0]

    def upload(data: bytes) -> Upload:  # per request, as the service makes it (header parse included)
        return Upload(data, settings.max_pixels, settings.decode_max_side, settings.large_image_pixels)

    boxes = {label: [pipeline.crop_for(m, pipeline.PersonBox((0, 0, upload(data).width, upload(data).height),
                                                     whole_image=True))]
             for label, data in images.items()}
    x1 = pipeline.preprocess(m, upload(images["photo"]), boxes["photo"])  # a real crop, as the service feeds
    bound_run = iobinding_runner(session, x1)
    prep: dict[str, list[float]] = {label: [] for label in images}
    http: dict[str, list[float]] = {f"{label}/{h}": [] for label in images for h in ("none", "png")}
    ort: list[float] = []
    bound: list[float] = []
    timing: list[dict] = []
    per_round = max(1, n // ROUNDS)
    for _ in range(ROUNDS):  # interleaved: every quantity sees the same spells of machine load
        ort += timed(lambda: session.run(None, {"image": x1}), per_round)
        bound += timed(bound_run, per_round)
        for label, data in images.items():
            prep[label] += timed(lambda d=data, b=boxes[label]: pipeline.preprocess(m, upload(d), b), per_round)
            for heatmaps in ("none", "png"):
                samples, t = http_latency(client, m.id, data, heatmaps, per_round)
                http[f"{label}/{heatmaps}"] += samples
                if label == "photo" and heatmaps == "none":
                    timing += t
    x8 = np.repeat(x1, 8, axis=0)
    batch8 = percentile(timed(lambda: session.run(None, {"image": x8}), max(10, n // 4)), 50)
    http_p50 = {k: percentile(v, 50) for k, v in http.items()}
    prep_p50 = {k: percentile(v, 50) for k, v in prep.items()}
    m.pool.close()
    return ModelResult(m.id, m.manifest, ort, bound, batch8, torch_latency(m.manifest, threads, n),
                       http_p50, prep_p50, timing)


def default_images(image: str | None, data: str | None) -> dict[str, bytes]:
    """{"photo": a real photo, "noise": the worst-case JPEG}; the photo is ``--image``,
    else the first LSP test image, else (no dataset) a synthetic photo-like JPEG."""
    if image:
        photo = Path(image).read_bytes()
    else:
        root = Path(data or os.environ.get("POSE_DATA_DIR", "../shared/datasets"))
        photo = ((root / TYPICAL_PHOTO).read_bytes() if (root / TYPICAL_PHOTO).exists()
                 else _jpeg(_smooth_scene(), 90))
    rng = np.random.default_rng(0)
    return {"photo": photo, "noise": _jpeg(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8), 90)}


def _smooth_scene() -> np.ndarray:
    yy, xx = np.mgrid[0:266, 0:400]
    rgb = np.stack([xx * 255 // 399, yy * 255 // 265, np.full_like(xx, 90)], -1).astype(np.uint8)
    rgb[60:220, 160:240] = (200, 170, 150)
    return rgb


def _jpeg(rgb: np.ndarray, quality: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def ms(seconds: float) -> str:
    return f"{seconds * 1e3:.2f}"


def x(a: float, b: float) -> str:
    return f"{a / b:.2f}×"


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(r) + " |" for r in rows)]


def report(results: list[ModelResult], images: dict[str, bytes], floor: float, default: str,
           conc: list[tuple[int, float]], conc_batched: list[tuple[int, float]], peak: float,
           threads: int, providers: list[str], n: int, seconds: float) -> str:
    photo, noise = len(images["photo"]), len(images["noise"])
    lines = [f"# Benchmarks ({dt.date.today().isoformat()})", "",
             f"Measured by `poseserve bench` in one run on {platform.machine()}, {os.cpu_count()} cores, "
             f"onnxruntime {' + '.join(providers)}, {threads} intra-op thread(s); float32 matmul peak "
             f"measured here: **{peak:.1f} GFLOP/s**. Images: *photo* = the first LSP test image "
             f"({photo} bytes JPEG), *noise* = a 400×300 JPEG of noise ({noise} bytes, the worst case "
             f"for the decoder). Times are p50 over {n} runs; read the ratios, the absolute values "
             "move with the machine's load.", "",
             "## Models (bare onnxruntime, session options as the service's)", ""]
    lines += table(["model", "params", "GFLOPs", "ORT p50 ms (batch 1)", "ORT p95 ms", "IOBinding p50 ms",
                    "img/s at batch 8", "PyTorch eager ÷ ORT", "achieved GFLOP/s (% of matmul peak)"],
                   [[r.id, f"{r.manifest.params / 1e6:.2f} M", f"{r.manifest.flops / 1e9:.3f}",
                     ms(r.ort_p50), ms(percentile(r.ort, 95)), ms(percentile(r.ort_bound, 50)),
                     f"{8 / r.ort_batch8:.0f}", x(r.eager, r.ort_p50) if r.eager else "n/a",
                     f"{r.manifest.flops / r.ort_p50 / 1e9:.1f} "
                     f"({100 * r.manifest.flops / r.ort_p50 / 1e9 / peak:.0f}%)"] for r in results])
    lines += ["", "## Service latency ÷ bare onnxruntime (real HTTP server on loopback, one client)", "",
              "*without decode* = (HTTP p50 − the image's decode/crop time measured alone) ÷ ORT p50: the "
              "service's own overhead, the part a faster server could remove.", ""]
    lines += table(["model", "HTTP p50 ms (photo, none)", "÷ ORT (photo, none)", "÷ ORT (photo, png)",
                    "÷ ORT (noise, none)", "without decode (photo)"],
                   [[r.id, ms(r.http["photo/none"]), x(r.http["photo/none"], r.ort_p50),
                     x(r.http["photo/png"], r.ort_p50), x(r.http["noise/none"], r.ort_p50),
                     x(r.http["photo/none"] - r.preprocess["photo"], r.ort_p50)] for r in results])
    lines += ["", "## Where one request's time goes (p50 ms, heatmaps=none)", "",
              "Each part measured on its own in this run; *the rest* = HTTP p50 minus the others: "
              "receiving the upload, multipart parsing, FastAPI validation and routing, the hop to the "
              "inference thread and back, keypoints to JSON.", ""]
    rows = []
    for r in results:
        for label in images:
            total = r.http[f"{label}/none"]
            parts = [r.ort_p50, r.preprocess[label], floor]
            rest = total - sum(parts)
            rows.append([r.id, label, ms(total), *(f"{ms(p)} ({100 * p / total:.0f}%)" for p in [*parts, rest])])
    lines += table(["model", "image", "HTTP p50", "inference (bare ORT)", "decode + crop + normalise",
                    "HTTP round-trip floor (GET /healthz)", "the rest"], rows)
    keys = ("read", "decode", "detect", "preprocess", "inference", "postprocess", "total")
    lines += ["", "## The service's own `timing_ms` (median, photo, heatmaps=none)", "",
              "decode = upload read + header checks; preprocess = pixel decode, crop, normalise (on the "
              "inference thread); inference = waiting for a session + the run; total = inside the handler.", ""]
    lines += table(["model", *keys], [[r.id, *(f"{statistics.median(t[k] for t in r.timing):.2f}" for k in keys)]
                                      for r in results])
    lines += ["", f"## Throughput vs concurrent clients ({default}, photo, heatmaps=none, {seconds:.0f} s each)", "",
              "The service's default configuration (sessions × threads derived from the CPU quota); "
              "the client threads run on the same machine.", ""]
    lines += table(["clients", "req/s", "÷ 1 client"], [[str(c), f"{rps:.1f}", x(rps, conc[0][1])] for c, rps in conc])
    lines += ["", "## Micro-batching (POSE_MICRO_BATCH=8, 2 ms window) vs off, same model", ""]
    lines += table(["clients", "req/s off", "req/s on", "on ÷ off"],
                   [[str(c), f"{a:.1f}", f"{b:.1f}", x(b, a)] for (c, a), (_, b) in zip(conc, conc_batched)])
    return "\n".join(lines) + "\n"


def main(args: argparse.Namespace) -> None:
    from app.settings import Settings
    from benchmarks import per_person, people

    images = default_images(args.image, args.data)
    settings = Settings(model_dir=args.model_dir, pool_size=1, intra_op_threads=args.threads, device=args.device)
    peak = matmul_peak_gflops()
    server = Server(args.model_dir, args.threads, POSE_DEVICE=args.device)
    try:
        client = Client(server.port)
        listing = json.loads(client.get("/models")[1])
        served = {m["id"]: m["providers"] for m in listing["models"]}
        results = []
        for model_id in sorted(served):
            r = measure_model(args.model_dir / f"{model_id}.json", settings, client, images, args.n, args.threads)
            if r:
                results.append(r)
                print(r.id, f"ort {r.ort_p50 * 1e3:.2f} ms, http {r.http['photo/none'] * 1e3:.2f} ms", flush=True)
        floor = percentile(timed(lambda: client.get("/healthz"), args.n), 50)
        default = listing["default_model"]  # what a request naming no model gets on this host
    finally:
        server.close()
    conc, conc_batched = [], []
    people_lines: list[str] = []
    for env, out in (({}, conc), ({"POSE_MICRO_BATCH": "8", "POSE_MICRO_BATCH_WAIT_MS": "2"}, conc_batched)):
        # whole photos and throughput with the service's default pool and threads, as deployed
        loaded = Server(args.model_dir, threads=0, pool=0, POSE_DEVICE=args.device, **env)
        try:
            if not env:
                people_lines = people.section(Client(loaded.port), args.model_dir, default, args.data,
                                              args.n, args.threads)
            out += [(c, throughput(loaded.port, images["photo"], default, c, args.seconds)) for c in (1, 2, 4, 8)]
        finally:
            loaded.close()
    people_lines += per_person.section(args.model_dir, args.threads, args.n, args.data,
                                       Path(args.out).with_name("accuracy_latency.png"))
    text = report(results, images, floor, default, conc, conc_batched, peak, args.threads,
                  served[default], args.n, args.seconds) + "\n".join(people_lines) + "\n"
    Path(args.out).write_text(text)
    print(text)


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """The options bench, profile and ab share: which models, which photo."""
    p.add_argument("--model-dir", type=Path, default=Path("models/onnx"))
    p.add_argument("--image", help="the 'photo' JPEG to send (default: LSP im1001.jpg from --data)")
    p.add_argument("--data", help="datasets folder (default: $POSE_DATA_DIR or ../shared/datasets)")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_common_arguments(p)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                   help="as POSE_DEVICE: auto = CUDA when onnxruntime-gpu sees a GPU")
    p.add_argument("--n", type=int, default=100, help="timed runs per measurement")
    p.add_argument("--seconds", type=float, default=5.0, help="per concurrency level")
    p.add_argument("--out", default="docs/benchmarks.md")

