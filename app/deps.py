"""Request dependencies, declared once at module level and used through ``Annotated``.

They are ``async def`` although they never await: FastAPI runs a plain ``def``
dependency on a worker thread, two thread hops per request for a dict lookup.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, File, HTTPException, Query, Request, UploadFile

from app.imaging import ImageError, open_image, oriented_size
from app.metrics import Metrics
from app.pipeline import DetectParams, Upload
from app.registry import LoadedModel, Registry
from app.settings import Settings

ACCEPTED_CONTENT_TYPES = ("image/", "application/octet-stream")


async def get_registry(request: Request) -> Registry:
    return request.app.state.registry


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


RegistryDep = Annotated[Registry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]


async def selected_model(
        reg: RegistryDep, settings: SettingsDep,
        model: Annotated[str | None, Query(description="architecture id from GET /models; default from "
                                                       "POSE_DEFAULT_MODEL", max_length=64)] = None,
) -> LoadedModel:
    name = model or settings.default_model
    if name in reg.models:
        return reg.models[name]
    if name in reg.failed:
        raise HTTPException(503, f"model {name!r} is unavailable: {reg.failed[name]}")
    if name in reg.skipped:
        raise HTTPException(404, f"model {name!r} is not served here: {reg.skipped[name]}; "
                                 f"available: {sorted(reg.models)}")
    raise HTTPException(404, f"unknown model {name!r}; available: {sorted(reg.models)}")


async def read_upload(
        image: Annotated[UploadFile, File(description="JPEG, PNG, WebP, BMP, GIF or TIFF")],
        settings: SettingsDep,
) -> Upload:
    """Content-type and header-only image checks. Pixels are decoded later, per use, at the
    resolution that use needs."""
    content_type = (image.content_type or "application/octet-stream").lower()
    if not content_type.startswith(ACCEPTED_CONTENT_TYPES):
        raise HTTPException(415, f"unsupported content type {content_type!r}; send an image")
    data = await image.read()
    try:
        width, height = oriented_size(open_image(data, settings.max_pixels))
    except ImageError as exc:
        raise HTTPException(exc.status, exc.detail) from None
    return Upload(data, width, height)


ModelDep = Annotated[LoadedModel, Depends(selected_model)]
UploadDep = Annotated[Upload, Depends(read_upload)]


async def detect_params(
        detect: Annotated[bool, Query(description="find every person with the person detector (default); "
                                                  "false: the whole image (or bbox) is one person")] = True,
        min_person_score: Annotated[float | None, Query(
            ge=0, le=1, description="lowest detector score kept, in [0, 1]; default: the detector "
                                    "manifest's score_threshold (GET /models)")] = None,
        max_persons: Annotated[int, Query(ge=1, le=50, description="at most this many people, the most "
                                                                   "prominent (score × box area)")] = 10,
) -> DetectParams:
    return DetectParams(detect, min_person_score, max_persons)


DetectDep = Annotated[DetectParams, Depends(detect_params)]
