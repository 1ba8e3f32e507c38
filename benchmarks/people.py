"""The detector and whole-photo requests, for ``poseserve bench``.

Group photos are composed from one LSP test photo of a single person, tiled 1, 3 and 6
times, so the only thing that changes between them is the number of people. Measured:
the detector's bare onnxruntime latency and what the service adds over it (a person-free
photo: detection only), end-to-end p50 for 1, 3, 6 and 12 people, and the marginal cost of
each extra person as a ratio to a single-person ``bbox`` request.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np
from PIL import Image

SINGLE = Path("lsp") / "images" / "im1500.jpg"  # one athlete; the detector finds exactly one
LAYOUT = {1: (1, 1), 3: (3, 1), 6: (3, 2), 12: (4, 3)}  # people → (columns, rows)


def group_photo(single: Image.Image, count: int, layout: tuple[int, int] | None = None) -> bytes:
    """``count`` copies of ``single`` tiled in ``layout`` (columns, rows; default ``LAYOUT``'s)."""
    cols, rows = layout or LAYOUT[count]
    canvas = Image.new("RGB", (single.width * cols, single.height * rows), (128, 128, 128))
    for i in range(count):
        canvas.paste(single, ((i % cols) * single.width, (i // cols) * single.height))
    buf = io.BytesIO()
    canvas.save(buf, "JPEG", quality=90)
    return buf.getvalue()


def resized_detectors(path: Path, threads: int, photo: bytes, sizes: tuple[int, ...] = (416, 320)) -> dict:
    """The shipped detector's graph resized to other inputs (``export.detector.resized_graph``),
    each with its letterboxed input: size → (session, input). Empty without the onnx package."""
    import tempfile

    from models.detection import letterbox
    from models.runtime import create_session

    try:
        from export.detector import resized_graph
    except ModuleNotFoundError:  # onnx: the train extra
        return {}
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            resized_graph(path, Path(tmp) / f"{size}.onnx", size)
            x, _ = letterbox(Image.open(io.BytesIO(photo)).convert("RGB"), size)
            out[size] = (create_session(Path(tmp) / f"{size}.onnx", threads), x)
    return out


def default_config() -> str:
    """The pool the service derives for itself on this machine (what a deployment gets)."""
    from app.settings import Settings

    pool, threads = Settings(pool_size=0, intra_op_threads=0).threads_and_pool()
    return f"{pool} session(s) × {threads} thread(s) per model"


def section(client, model_dir: Path, model: str, data: str | None, n: int, threads: int) -> list[str]:
    from benchmarks.bench import ms, percentile, table, timed, x
    from models.detection import letterbox
    from models.manifest import load_manifest
    from models.runtime import create_session

    lines = ["", "## Person detection and whole photos", ""]
    root = Path(data or os.environ.get("POSE_DATA_DIR", "../shared/datasets"))
    detector_json = model_dir / "person_detector.json"
    if not (root / SINGLE).exists() or not detector_json.exists():
        return lines + ["Not measured: needs the LSP photos and the person detector in the model directory.", ""]
    single = Image.open(root / SINGLE).convert("RGB")
    photos = {k: group_photo(single, k) for k in LAYOUT}
    manifest = load_manifest(detector_json)
    session = create_session(manifest.onnx_path(detector_json), threads)
    x_det, _ = letterbox(Image.open(io.BytesIO(photos[3])).convert("RGB"), int(manifest.input["size"]))
    noise = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 400, 3), dtype=np.uint8)).save(noise, "JPEG")

    def request(image: bytes, params: str) -> int:
        status, body = client.post_image(f"/pose?model={model}&heatmaps=none&max_persons=50&{params}", image)
        assert status == 200, body[:200]
        return len(json.loads(body)["persons"])

    found = {k: request(photos[k], "detect=true") for k in LAYOUT}
    assert request(noise.getvalue(), "detect=true") == 0
    w, h = single.size
    bbox = f"detect=true&bbox={w * 0.1:.0f},{h * 0.05:.0f},{w * 0.8:.0f},{h * 0.9:.0f}"
    smaller = resized_detectors(manifest.onnx_path(detector_json), threads, photos[3])
    samples: dict[str, list[float]] = {"bare": [], "empty": [], "bbox": [], **{str(k): [] for k in LAYOUT},
                                       **{f"det{size}": [] for size in smaller}}
    per_round = max(1, n // 5)
    for _ in range(5):  # interleaved blocks: every quantity sees the same machine load
        samples["bare"] += timed(lambda: session.run(None, {"images": x_det}), per_round)
        for size, (other, x_other) in smaller.items():
            samples[f"det{size}"] += timed(lambda o=other, xo=x_other: o.run(None, {"images": xo}), per_round)
        samples["empty"] += timed(lambda: request(noise.getvalue(), "detect=true"), per_round)
        samples["bbox"] += timed(lambda: request(photos[1], bbox), per_round)
        for k in LAYOUT:
            samples[str(k)] += timed(lambda k=k: request(photos[k], "detect=true"), per_round)
    p50 = {k: percentile(v, 50) for k, v in samples.items()}
    most = max(LAYOUT)
    marginal = (p50[str(most)] - p50["1"]) / (most - 1)
    lines += [f"Model `{model}`; detector `{manifest.id}` ({manifest.architecture}, {manifest.input['size']} px); "
              "the service in its default configuration (sessions and threads derived from the CPU quota, "
              f"as deployed: {default_config()}), {threads} intra-op thread(s) for the bare detector; "
              f"p50 over {n} requests each, interleaved.", ""]
    lines += table(["measurement", "p50 ms", "ratio"], [
        ["detector alone, bare onnxruntime (letterboxed input ready)", ms(p50["bare"]), "1.00×"],
        *[[f"the same detector resized to {size} px (`poseserve detector --input-size {size}`), bare",
           ms(p50[f"det{size}"]), x(p50[f"det{size}"], p50["bare"]) + " of bare detector"] for size in smaller],
        ["service, person-free photo (decode + detector + NMS, no pose run)", ms(p50["empty"]),
         x(p50["empty"], p50["bare"]) + " of bare detector"],
        ["service, one person given as `bbox` (no detection)", ms(p50["bbox"]), "1.00×"],
        *[[f"service, whole photo with {k} people (found {found[k]})", ms(p50[str(k)]),
           x(p50[str(k)], p50["bbox"]) + " of the bbox request"] for k in LAYOUT],
        [f"marginal cost of one more person (({most} people − 1 person) ÷ {most - 1})", ms(marginal),
         x(marginal, p50["bbox"]) + " of the bbox request"]])
    return lines + [""]
