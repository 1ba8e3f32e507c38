"""Request dependencies, declared once at module level and used through ``Annotated``.

They are ``async def`` even where they never await: FastAPI runs a plain ``def``
dependency on a worker thread, two thread hops per request for a dict lookup.
"""
from __future__ import annotations

from typing import Annotated

from fastapi import Depends, File, HTTPException, Query, Request, UploadFile

from app.imaging import ImageError
from app.metrics import Metrics
from app.pipeline import DetectParams, busy
from app.pool import Overloaded
from app.registry import LoadedModel, Registry
from app.settings import Settings
from app.uploads import DecodePool, Upload, image_error

ACCEPTED_CONTENT_TYPES = ("image/", "application/octet-stream")


async def get_registry(request: Request) -> Registry:
    return request.app.state.registry


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


async def get_decoder(request: Request) -> DecodePool:
    return request.app.state.decoder


RegistryDep = Annotated[Registry, Depends(get_registry)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
DecoderDep = Annotated[DecodePool, Depends(get_decoder)]


async def selected_model(
        reg: RegistryDep, settings: SettingsDep,
        model: Annotated[str | None, Query(description="model id from GET /models; default: GET /models' "
                                                       "default_model (POSE_DEFAULT_MODEL)", max_length=64)] = None,
) -> LoadedModel:
    name = model or reg.default_for(settings.default_model)
    if not reg.models:
        raise HTTPException(503, "no pose model is loaded on this server")
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
        settings: SettingsDep, decoder: DecoderDep,
) -> Upload:
    """Content-type and header-only image checks; a large image is then decoded in the
    bounded decode pool, before the request may take an inference session. Other
    images decode later, per use, at the resolution that use needs."""
    content_type = (image.content_type or "application/octet-stream").lower()
    if not content_type.startswith(ACCEPTED_CONTENT_TYPES):
        raise HTTPException(415, f"unsupported content type {content_type!r}; send an image")
    data = await image.read()
    try:
        upload = Upload(data, settings.max_pixels, settings.decode_max_side, settings.large_image_pixels)
        await decoder.prepare(upload)
    except ImageError as exc:
        raise image_error(exc) from None
    except Overloaded as exc:
        raise busy(exc) from None
    return upload


def _declared(dependant) -> tuple[set[str], set[str]]:
    """The query parameters and body (form) fields a route and its dependencies declare."""
    query = {p.alias for p in dependant.query_params}
    body = {p.alias for p in dependant.body_params}
    for sub in dependant.dependencies:
        q, b = _declared(sub)
        query, body = query | q, body | b
    return query, body


async def reject_unknown_fields(request: Request) -> None:
    """422 for a query parameter or form field the route does not declare.

    Why: ``?modle=cpm`` or ``model`` sent as a form field would otherwise be ignored and
    answered by the default model, and the user would believe they had compared models.
    The route's own declarations (what /docs shows) are the list of accepted names.
    """
    query, body = _declared(request.scope["route"].dependant)
    errors = [{"loc": ["query", k], "type": "extra_forbidden",
               "msg": f"unknown query parameter {k!r}; accepted: {', '.join(sorted(query))}"}
              for k in dict.fromkeys(request.query_params) if k not in query]
    if body and request.headers.get("content-type", "").startswith("multipart/form-data"):
        form = await request.form()  # already parsed for the route's File parameter: no second read
        errors += [{"loc": ["body", k], "type": "extra_forbidden",
                    "msg": f"unknown form field {k!r}; accepted: {', '.join(sorted(body))} "
                           "(options go in the query string)"}
                   for k in dict.fromkeys(form.keys()) if k not in body]
    if errors:
        raise HTTPException(422, errors)


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
Flip = Annotated[bool | None, Query(
    description="test-time flip: also run each person's mirror image and average the two (twice the "
                "pose-model time); default: the server's POSE_FLIP_TEST (GET /models: flip_test)")]
