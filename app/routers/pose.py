"""Inference routes: ``POST /pose``, ``/pose/compare`` and ``/pose/render``."""
from __future__ import annotations

import io
import time
from typing import Annotated, Literal

import orjson
from fastapi import APIRouter, Depends, HTTPException, Query
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel

from app.deps import DetectDep, Flip, MetricsDep, ModelDep, RegistryDep, SettingsDep, UploadDep, reject_unknown_fields
from app.pipeline import detects, resolve_people, run_pose
from app.render import draw_people, fit_within
from app.schemas import CompareResponse, ErrorResponse, PoseResponse

router = APIRouter(prefix="/pose", tags=["pose"], dependencies=[Depends(reject_unknown_fields)])
ERRORS = {code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 422, 503)}

BBox = Annotated[str | None, Query(
    description="person box 'x,y,w,h' in image pixels: skips detection, this box is the one person",
    max_length=200)]
Stages = Annotated[bool, Query(description="also return the keypoints after every "
                                           "stage/stack/iteration")]
ModelList = Annotated[str | None, Query(
    description="comma-separated model ids from GET /models, compared in that order; default: the "
                "full-precision model of each architecture", max_length=500)]
HeatmapFormat = Annotated[Literal["png", "array", "none"], Query(
    description="png: one 8-bit PNG per joint; array: floats; none: omit")]


def json_response(body: BaseModel) -> Response:
    """Serialise once, with orjson, numpy arrays (float heatmaps) written straight from
    their memory. Returning the model would make FastAPI validate it again against
    ``response_model`` first, a cost paid on every request for nothing: the model was built
    by our own code from typed fields. /docs still shows ``response_model``.
    """
    return Response(orjson.dumps(body.model_dump(), option=orjson.OPT_SERIALIZE_NUMPY),
                    media_type="application/json")


@router.post("", response_model=PoseResponse, responses=ERRORS,
             summary="Estimate the pose of every person in an image")
async def estimate_pose(upload: UploadDep, m: ModelDep, reg: RegistryDep, detect: DetectDep,
                        settings: SettingsDep, metrics: MetricsDep, bbox: BBox = None,
                        heatmaps: HeatmapFormat = "png", stages: Stages = False, flip: Flip = None) -> Response:
    t0 = time.perf_counter()
    people = await resolve_people(reg, upload, bbox, detect, settings, metrics)
    detect_s = time.perf_counter() - t0 if detects(bbox, detect) else 0.0
    return json_response(await run_pose(m, upload, people, heatmaps, stages, t0, detect_s, settings, metrics,
                                               flip))


@router.post("/compare", response_model=CompareResponse, responses=ERRORS,
             summary="Run several models (default: every architecture) on the same people, side by side")
async def compare(upload: UploadDep, reg: RegistryDep, detect: DetectDep, settings: SettingsDep,
                  metrics: MetricsDep, bbox: BBox = None, stages: Stages = False, models: ModelList = None,
                  heatmaps: HeatmapFormat = "none", flip: Flip = None) -> Response:
    try:
        chosen = reg.compared(models)
    except KeyError as exc:
        raise HTTPException(404, f"unknown model {exc.args[0]!r} in models; available: {sorted(reg.models)}") from None
    t0 = time.perf_counter()
    people = await resolve_people(reg, upload, bbox, detect, settings, metrics)  # detected once
    results = [await run_pose(m, upload, people, heatmaps, stages, time.perf_counter(), 0.0, settings, metrics,
                                   flip) for m in chosen]
    detected = len(people) if detects(bbox, detect) else None
    return json_response(CompareResponse(image={"width": upload.width, "height": upload.height},
                                         persons_detected=detected, results=results,
                                         total_ms=round((time.perf_counter() - t0) * 1e3, 2)))


@router.post("/render", response_class=Response, responses={
    200: {"content": {"image/png": {}}, "description": "the image (at most POSE_RENDER_MAX_SIDE pixels on its "
                                                       "long side) with every person's skeleton drawn, "
                                                       "limbs by side (the person's right red, left "
                                                       "green, centre blue), and their box and score "
                                                       "label in a colour each"}, **ERRORS},
    summary="The image with every estimated skeleton drawn on it (PNG)")
async def render_pose(upload: UploadDep, m: ModelDep, reg: RegistryDep, detect: DetectDep,
                      settings: SettingsDep, metrics: MetricsDep, bbox: BBox = None, flip: Flip = None) -> Response:
    t0 = time.perf_counter()
    people = await resolve_people(reg, upload, bbox, detect, settings, metrics)
    result = await run_pose(m, upload, people, "none", False, t0, 0.0, settings, metrics, flip)

    def draw() -> bytes:
        limit = settings.render_max_side
        img = fit_within(upload.rgb(max(upload.width, upload.height) / limit)[0], limit)
        buf = io.BytesIO()
        draw_people(img, result.persons, m.manifest.skeleton, m.manifest.keypoints,
                    scale=img.width / upload.width).save(buf, "PNG", compress_level=3)
        return buf.getvalue()

    return Response(await run_in_threadpool(draw), media_type="image/png",
                    headers={"x-pose-model": m.id, "x-persons": str(len(result.persons))})
