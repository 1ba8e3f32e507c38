"""The /pose request pipeline between HTTP and the session pools.

whole photo → ``find_people`` (decode for the detector, letterbox, detector session,
decode + NMS from ``models.detection``) → ``run_pose`` (every person's crop through the
pose model in one batched run) → keypoints in image pixels, most prominent person first.
With a ``bbox`` (or ``detect=false``) detection is skipped and that one box (or the
whole image) is the only person.

Everything model-specific comes from the manifests; this module knows no architecture.
The helpers are module-level so benchmarks and tests reach them without an app.
"""
from __future__ import annotations

import asyncio
import base64
import io
import math
import time
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
from fastapi import HTTPException
from fastapi.concurrency import run_in_threadpool
from PIL import Image

from app.batching import MicroBatcher
from app.imaging import ImageError
from app.metrics import Metrics
from app.pool import Feeds, Overloaded, RunResult, SessionPool
from app.registry import LoadedDetector, LoadedModel, Registry
from app.schemas import HeatmapPNG, Heatmaps, Keypoint, Person, PoseResponse, StageKeypoints, Timing
from app.settings import Settings
from app.uploads import Upload, image_error
from models import detection
from models.flip import merge_mirrored, with_mirrors
from models.transforms import CropBox, crop_square, normalise

T = TypeVar("T")


@dataclass(frozen=True)
class PersonBox:
    """Who to run the pose model on: a box in image pixels, its detector score (None when
    the box was given, not detected), and whether it is the whole image (``detect=false``)."""

    box: tuple[float, float, float, float]
    score: float | None = None
    whole_image: bool = False


@dataclass(frozen=True)
class DetectParams:
    enabled: bool = True
    min_score: float | None = None  # None: the detector manifest's default
    max_persons: int = 10


MIN_BOX_PX = 4  # a person smaller than this has no pose to find
MAX_BOX_FACTOR = 4  # a box may reach past the image (a cropped person), not absurdly far


def parse_bbox(text: str, width: int, height: int) -> tuple[float, float, float, float]:
    """Parse ``x,y,w,h`` in image pixels and check it is a plausible person box for this image.

    Refused with a reason (a 422 naming ``bbox``): not four finite numbers, not positive,
    under ``MIN_BOX_PX`` pixels, over ``MAX_BOX_FACTOR`` × the image, or not overlapping it.
    A box whose numbers are all ≤ 1 on a larger image gets a hint: it looks normalised.
    """
    parts = text.split(",")
    if len(parts) != 4:
        raise ValueError("bbox must be four numbers: x,y,w,h")
    try:
        x, y, w, h = (float(p) for p in parts)
    except ValueError:
        raise ValueError("bbox must be four numbers: x,y,w,h") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise ValueError("bbox values must be finite")
    if w <= 0 or h <= 0:
        raise ValueError("bbox width and height must be positive")
    if max(abs(x), abs(y), w, h) <= 1 and max(width, height) > 2:
        raise ValueError(f"bbox {text} looks like normalised coordinates; bbox is in image pixels "
                         f"(this image is {width}x{height}): multiply x and w by {width}, y and h by {height}")
    if w < MIN_BOX_PX or h < MIN_BOX_PX:
        raise ValueError(f"bbox must be at least {MIN_BOX_PX} pixels wide and high (image pixels)")
    if max(w, h) > MAX_BOX_FACTOR * max(width, height):
        raise ValueError(f"bbox is more than {MAX_BOX_FACTOR}x the {width}x{height} image; "
                         "it must be in image pixels")
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise ValueError(f"bbox lies outside the {width}x{height} image")
    return x, y, w, h


def crop_for(model: LoadedModel, person: PersonBox) -> CropBox:
    """The person box with the model's training margin, or the whole image (square, centred)."""
    if person.whole_image:
        return CropBox.around(*person.box, 1.0)
    return CropBox.around(*person.box, model.manifest.input.crop_margin)


def preprocess(model: LoadedModel, upload: Upload, boxes: list[CropBox]) -> np.ndarray:
    """Decode once (reduced as far as the smallest crop allows), crop every box, normalise:
    (N, 3, S, S) float32, one row per person."""
    spec = model.manifest.input
    rgb, scale = upload.rgb(min(b.side for b in boxes) / model.input_size / 2)
    crops = [crop_square(rgb, b.scaled(1 / scale), model.input_size) for b in boxes]
    return normalise(np.stack(crops), spec.mean, spec.std)


def keypoints(model: LoadedModel, coords: np.ndarray, scores: np.ndarray | None, box: CropBox,
              size: tuple[int, int]) -> list[Keypoint]:
    """(K, 2) normalised crop coordinates → keypoints in the pixels of an image of ``size``."""
    xy = box.to_image(coords)
    width, height = size
    return [Keypoint(id=i, name=name, x=round(float(xy[i, 0]), 2), y=round(float(xy[i, 1]), 2),
                     in_image=bool(0 <= xy[i, 0] <= width and 0 <= xy[i, 1] <= height),
                     score=None if scores is None else round(float(scores[i]), 4))
            for i, name in enumerate(model.manifest.keypoints)]


def coco_keypoints(model: LoadedModel, points: list[Keypoint]) -> list[float]:
    """One person's keypoints as COCO-17 ``[x, y, s] × 17`` (a COCO results file's format)."""
    out: list[float] = []
    for i in model.coco_order:
        if i is None:
            out += [0.0, 0.0, 0.0]
        else:
            k = points[i]
            out += [k.x, k.y, 1.0 if k.score is None else k.score]
    return out


def stage_keypoints(model: LoadedModel, stages: np.ndarray, box: CropBox, size: tuple[int, int]
                    ) -> list[StageKeypoints]:
    return [StageKeypoints(stage=t + 1, keypoints=keypoints(model, stages[t], None, box, size))
            for t in range(stages.shape[0])]


def heatmap_to_image(box: CropBox, height: int, width: int) -> list[list[float]]:
    """Affine A with [x, y] = A @ [col, row, 1]: heatmap cell centres → image pixels."""
    sx, sy = box.side / width, box.side / height
    return [[sx, 0.0, box.x0 + 0.5 * sx], [0.0, sy, box.y0 + 0.5 * sy]]


def encode_heatmaps(model: LoadedModel, maps: np.ndarray, fmt: str, box: CropBox) -> Heatmaps:
    """Per-joint maps as 8-bit PNGs (with their value range) or rounded float arrays."""
    k, h, w = maps.shape
    result = Heatmaps(source=model.manifest.heatmap_source, format=fmt,
                      height=h, width=w, to_image=heatmap_to_image(box, h, w))
    if fmt == "array":
        result.maps = np.round(maps.astype(np.float64), 4).astype(np.float32)  # float64 rounding, as before
        return result
    names = model.manifest.keypoints
    encoded = []
    for i in range(k):
        lo, hi = float(maps[i].min()), float(maps[i].max())
        scaled = (maps[i] - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros((h, w))
        buf = io.BytesIO()
        Image.fromarray(np.round(scaled).astype(np.uint8), "L").save(buf, "PNG", compress_level=1)
        encoded.append(HeatmapPNG(name=names[i], png=base64.b64encode(buf.getvalue()).decode(),
                                  min=round(lo, 6), max=round(hi, 6)))
    result.maps_png = encoded
    return result


def busy(exc: Overloaded) -> HTTPException:
    """The client's answer to a refusal: 503 with the refusal's Retry-After."""
    return HTTPException(503, f"server busy: {exc}", headers={"Retry-After": exc.retry_after})


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 2)


async def run_on(runner: SessionPool | MicroBatcher, graph_id: str, feeds: Feeds, settings: Settings,
                 metrics: Metrics) -> RunResult:
    """One run on a pool, with the service's error mapping: bad pixels → 4xx, no free
    session → 503 + Retry-After. The run's latency goes to /metrics under ``graph_id``."""
    try:
        result = await runner.run(feeds, settings.inference_timeout_s)
    except ImageError as exc:
        raise image_error(exc) from None
    except Overloaded as exc:
        metrics.rejected.labels(graph_id, "busy").inc()
        raise busy(exc) from None
    except TimeoutError:
        metrics.rejected.labels(graph_id, "timeout").inc()
        raise HTTPException(503, "inference timed out", headers={"Retry-After": "5"}) from None
    metrics.inference.labels(graph_id).observe(result.infer_s)
    return result


async def all_or_none(coroutines: list[Awaitable[T]]) -> list[T]:
    """Every result, in order; when one fails the others are cancelled (not left running on a
    session for an answer nobody will read) and the first failure is raised."""
    tasks = [asyncio.ensure_future(c) for c in coroutines]
    try:
        return list(await asyncio.gather(*tasks))
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def find_people(detector: LoadedDetector, upload: Upload, params: DetectParams, settings: Settings,
                      metrics: Metrics) -> list[PersonBox]:
    """Every person the detector finds above ``min_score``, most prominent first."""
    size = detector.input_size
    ratio: dict[str, float] = {}

    def feeds() -> dict[str, np.ndarray]:  # on the detector's worker thread
        # The detector sees ≤ size px: a JPEG can decode at 1/2..1/8 scale for it.
        rgb, scale = upload.rgb(max(upload.width, upload.height) / (2 * size))
        x, r = detection.letterbox(rgb, size)
        ratio["image"] = r / scale  # letterbox pixels per original-image pixel
        return {detector.manifest.input["name"]: x}

    result = await run_on(detector.pool, detector.id, feeds, settings, metrics)
    min_score = detector.manifest.score_threshold if params.min_score is None else params.min_score
    found = detection.people(result.outputs[0][0], size, ratio["image"], (upload.width, upload.height),
                             min_score, detector.manifest.iou_threshold, params.max_persons)
    return [PersonBox(d.as_xywh(), round(d.score, 4)) for d in found]


def detects(bbox: str | None, params: DetectParams) -> bool:
    """Whether a request runs the detector: no box given and detection not switched off."""
    return not bbox and params.enabled


async def resolve_people(reg: Registry, upload: Upload, bbox: str | None, params: DetectParams,
                         settings: Settings, metrics: Metrics) -> list[PersonBox]:
    """The given bbox, the whole image (``detect=false``), or the detector's people."""
    if detects(bbox, params):
        if reg.detector is None:
            raise HTTPException(503, "no person detector is loaded on this server: send bbox=x,y,w,h, "
                                     "or detect=false to treat the whole image as one person")
        return await find_people(reg.detector, upload, params, settings, metrics)
    if bbox:
        try:
            return [PersonBox(parse_bbox(bbox, upload.width, upload.height))]
        except ValueError as exc:
            raise HTTPException(422, [{"loc": ["query", "bbox"], "msg": str(exc),
                                       "type": "value_error"}]) from None
    return [PersonBox((0.0, 0.0, float(upload.width), float(upload.height)), whole_image=True)]


def flips(m: LoadedModel, flip: bool | None, settings: Settings) -> bool:
    """Whether a request's people are averaged with their mirror image: the request's
    ``flip``, else the server's default; always for a graph with the flip inside."""
    return m.manifest.flip_test or (settings.flip_test if flip is None else flip)


async def run_pose(m: LoadedModel, upload: Upload, people: list[PersonBox], heatmaps: str, stages: bool,
                   t0: float, detect_s: float, settings: Settings, metrics: Metrics,
                   flip: bool | None = None) -> PoseResponse:
    """Every person's crop through the pose model in batched runs; keypoints in image pixels."""
    t1 = time.perf_counter()
    image = {"width": upload.width, "height": upload.height}
    flip_test = flips(m, flip, settings)
    mirror = flip_test and not m.manifest.flip_test  # the graph does not do it itself
    decoded_before = upload.decode_s  # pixel decoding so far: a large image's (in the pool) + the detector's
    read_s = t1 - t0 - detect_s
    detect_ms = _ms(max(detect_s - (decoded_before - upload.prepared_s), 0.0))  # without its decode
    if not people:
        return PoseResponse(model=m.id, image=image, persons=[], crop=None, keypoints=None, flip_test=flip_test,
                            timing_ms=Timing(read=_ms(read_s), decode=_ms(decoded_before), detect=detect_ms,
                                             preprocess=0, inference=0, postprocess=0, total=_ms(t1 - t0)))
    boxes = [crop_for(m, p) for p in people]
    # One person may join a micro-batch; a group is already a batch and goes straight to the pool,
    # in runs of at most ``max_batch`` crops (mirror images included): activation memory grows
    # with the batch, and a crowded photo must not decide the server's peak. The runs are spread
    # evenly over the pool's sessions and run at once, so an idle server's cores all work on a
    # crowd instead of one session's thread.
    runner = m.runner if len(boxes) == 1 else m.pool
    per_run = max(1, settings.max_batch // 2) if mirror else settings.max_batch
    per_run = min(per_run, math.ceil(len(boxes) / len(m.pool.sessions)))

    async def run_part(part: list[CropBox]) -> tuple[dict[str, np.ndarray], float]:
        def feeds() -> dict[str, np.ndarray]:
            # The pixels are decoded on the session's worker thread, right before inference.
            crops = preprocess(m, upload, part)
            return {"image": with_mirrors(crops) if mirror else crops}

        outputs, prep, _ = await run_on(runner, m.id, feeds, settings, metrics)
        named = dict(zip(m.output_names, outputs))
        decoding = m.manifest.heatmap_decoding
        merged = merge_mirrored(named, m.manifest.flip_permutation, m.manifest.output_kind,
                                decoding.refine, decoding.sigma) if mirror else named
        return merged, prep

    parts = [boxes[start:start + per_run] for start in range(0, len(boxes), per_run)]
    done = await all_or_none([run_part(part) for part in parts])
    chunks = [named for named, _ in done]
    lanes = min(len(parts), len(m.pool.sessions))
    prepare_s = sum(prep for _, prep in done) / lanes  # per lane: the parts prepare side by side
    t2 = time.perf_counter()
    out = {name: np.concatenate([c[name] for c in chunks]) for name in chunks[0]}
    size = (upload.width, upload.height)
    persons = []
    for i, (p, box) in enumerate(zip(people, boxes)):
        scores = out["scores"][i] if "scores" in out else None
        points = keypoints(m, out["keypoints"][i], scores, box, size)
        persons.append(Person(bbox=[round(v, 2) for v in p.box], score=p.score,
                              crop=[round(box.x0, 2), round(box.y0, 2), round(box.side, 2)],
                              keypoints=points, coco_keypoints=coco_keypoints(m, points),
                              stages=stage_keypoints(m, out["stage_keypoints"][i], box, size) if stages else None))
    if heatmaps != "none":
        def encode_all() -> list[Heatmaps]:
            return [encode_heatmaps(m, out["heatmaps"][i], heatmaps, box) for i, box in enumerate(boxes)]

        for person, maps in zip(persons, await run_in_threadpool(encode_all)):
            person.heatmaps = maps
    first = persons[0]
    t3 = time.perf_counter()
    # read = upload read + header checks; decode = pixel decoding for every use; detect = the
    # detector's letterbox, run and NMS; preprocess = crops + normalise; inference = waiting for
    # a session + the run.
    pose_decode_s = upload.decode_s - decoded_before  # decoded for the crops, on the session's thread
    return PoseResponse(
        model=m.id, image=image, persons=persons, crop=first.crop, keypoints=first.keypoints, flip_test=flip_test,
        heatmaps=first.heatmaps, stages=first.stages,
        timing_ms=Timing(read=_ms(read_s), decode=_ms(upload.decode_s), detect=detect_ms,
                         preprocess=_ms(max(prepare_s - pose_decode_s, 0.0)),
                         inference=_ms(t2 - t1 - prepare_s), postprocess=_ms(t3 - t2), total=_ms(t3 - t0)))
