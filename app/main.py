"""The FastAPI application: ``uvicorn app.main:app``.

Models are loaded in the ``lifespan`` (all sessions created and warmed before the first
request); handlers get them through dependencies; responses are typed pydantic models,
so /docs shows the exact contract.
"""

import io
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from app import pose
from app.imaging import CropBox, ImageError, load_rgb, open_image, oriented_size, reopen
from app.limits import BodySizeLimit
from app.memory import limit_malloc_arenas
from app.metrics import Metrics
from app.observability import RequestObserver
from app.pool import Overloaded
from app.registry import LoadedModel, Registry, load_registry
from app.render import draw_skeleton
from app.schemas import (
    CompareResponse,
    ErrorResponse,
    ModelInfo,
    ModelsResponse,
    PoseResponse,
    ReadyResponse,
    Timing,
)
from app.settings import Settings, get_settings

log = logging.getLogger("poseserve")
STATIC = Path(__file__).parent / "static"
ACCEPTED_CONTENT_TYPES = ("image/", "application/octet-stream")
ERRORS = {code: {"model": ErrorResponse} for code in (400, 404, 413, 415, 422, 503)}


def json_response(body: BaseModel) -> Response:
    """Serialise once, in pydantic-core. Returning the model would make FastAPI validate it
    again against ``response_model`` first, a cost paid on every request for nothing: the
    model was built by our own code from typed fields. /docs still shows ``response_model``.
    """
    return Response(body.model_dump_json(), media_type="application/json")


def _ms(seconds: float) -> float:
    return round(seconds * 1e3, 2)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.registry = await run_in_threadpool(load_registry, settings)
        yield
        app.state.registry.close()

    app = FastAPI(
        title="poseserve", version="0.1.0", lifespan=lifespan, debug=False,
        description="2D human pose estimation with five classic architectures "
                    "(DeepPose, Tompson et al., CPM, IEF, Stacked Hourglass), served from ONNX.")
    app.state.settings, app.state.metrics = settings, metrics
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_upload_bytes + 64 * 1024)  # + multipart framing
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"], allow_headers=["*"])
    app.add_middleware(RequestObserver, metrics=metrics)  # added last = outermost: sees every answer

    # Dependencies are ``async def`` although they never await: FastAPI runs a plain ``def``
    # dependency on a worker thread, two thread hops per request for a dict lookup.
    async def registry(request: Request) -> Registry:
        return request.app.state.registry

    async def selected_model(reg: Annotated[Registry, Depends(registry)],
                       model: Annotated[str | None, Query(
                           description="architecture id from GET /models; default from "
                                       "POSE_DEFAULT_MODEL", max_length=64)] = None) -> LoadedModel:
        name = model or settings.default_model
        if name in reg.models:
            return reg.models[name]
        if name in reg.failed:
            raise HTTPException(503, f"model {name!r} is unavailable: {reg.failed[name]}")
        if name in reg.skipped:
            raise HTTPException(404, f"model {name!r} is not served here: {reg.skipped[name]}; "
                                     f"available: {sorted(reg.models)}")
        raise HTTPException(404, f"unknown model {name!r}; available: {sorted(reg.models)}")

    async def read_upload(image: UploadFile) -> tuple[bytes, tuple[int, int]]:
        """Content-type and header-only image checks; returns (bytes, oriented size).

        Pixels are decoded later, per use, at the resolution that use needs.
        """
        content_type = (image.content_type or "application/octet-stream").lower()
        if not content_type.startswith(ACCEPTED_CONTENT_TYPES):
            raise HTTPException(415, f"unsupported content type {content_type!r}; send an image")
        data = await image.read()
        try:
            return data, oriented_size(open_image(data, settings.max_pixels))
        except ImageError as exc:
            raise HTTPException(exc.status, exc.detail) from None

    def person_crop(m: LoadedModel, size: tuple[int, int], bbox: str | None) -> CropBox:
        try:
            return pose.crop_for(m, size, pose.parse_bbox(bbox, *size) if bbox else None)
        except ValueError as exc:
            raise HTTPException(422, [{"loc": ["query", "bbox"], "msg": str(exc),
                                       "type": "value_error"}]) from None

    async def run_pose(m: LoadedModel, upload: tuple[bytes, tuple[int, int]], bbox: str | None,
                       heatmaps: str, stages: bool, t0: float) -> PoseResponse:
        """Crop → session pool → keypoints in image pixels (+ heatmaps, stages), timed."""
        data, (width, height) = upload
        box = person_crop(m, (width, height), bbox)
        t1 = time.perf_counter()
        try:  # the pixels are decoded on the session's worker thread, right before inference
            outputs, prepare_s, infer_s = await m.runner.run(
                lambda: {"image": pose.preprocess(m, data, box)}, settings.inference_timeout_s)
        except ImageError as exc:
            raise HTTPException(exc.status, exc.detail) from None
        except Overloaded as exc:
            metrics.rejected.labels(m.id, "busy").inc()
            raise HTTPException(503, f"server busy: {exc}", headers={"Retry-After": "1"}) from None
        except TimeoutError:
            metrics.rejected.labels(m.id, "timeout").inc()
            raise HTTPException(503, "inference timed out", headers={"Retry-After": "5"}) from None
        t2 = time.perf_counter()
        metrics.inference.labels(m.id).observe(infer_s)
        out = dict(zip(m.output_names, outputs))
        scores = out["scores"][0] if "scores" in out else None
        response = PoseResponse(
            model=m.id, image={"width": width, "height": height},
            crop=[round(box.x0, 2), round(box.y0, 2), round(box.side, 2)],
            keypoints=pose.keypoints(m, out["keypoints"][0], scores, box),
            timing_ms=Timing(decode=0, preprocess=0, inference=0, postprocess=0, total=0))
        if heatmaps != "none":
            response.heatmaps = await run_in_threadpool(
                pose.encode_heatmaps, m, out["heatmaps"][0], heatmaps, box)
        if stages:
            response.stages = pose.stage_keypoints(m, out["stage_keypoints"][0], box)
        t3 = time.perf_counter()
        # decode = upload read + header checks; preprocess = pixel decode, crop, normalise;
        # inference = waiting for a session + the run.
        response.timing_ms = Timing(decode=_ms(t1 - t0), preprocess=_ms(prepare_s),
                                    inference=_ms(t2 - t1 - prepare_s), postprocess=_ms(t3 - t2),
                                    total=_ms(t3 - t0))
        return response

    BBOX = Annotated[str | None, Query(
        description="person box 'x,y,w,h' in image pixels; default: the whole image", max_length=200)]
    IMAGE = Annotated[UploadFile, File(description="JPEG, PNG, WebP, BMP, GIF or TIFF")]
    STAGES = Annotated[bool, Query(description="also return the keypoints after every "
                                               "stage/stack/iteration")]

    @app.post("/pose", response_model=PoseResponse, responses=ERRORS,
              summary="Estimate the pose of one person in an image")
    async def estimate_pose(
        image: IMAGE,
        m: Annotated[LoadedModel, Depends(selected_model)],
        bbox: BBOX = None,
        heatmaps: Annotated[Literal["png", "array", "none"], Query(
            description="png: one 8-bit PNG per joint; array: floats; none: omit")] = "png",
        stages: STAGES = False,
    ) -> Response:
        t0 = time.perf_counter()
        return json_response(await run_pose(m, await read_upload(image), bbox, heatmaps, stages, t0))

    @app.post("/pose/compare", response_model=CompareResponse, responses=ERRORS,
              summary="Run every served architecture on one image, side by side")
    async def compare(
        image: IMAGE,
        reg: Annotated[Registry, Depends(registry)],
        bbox: BBOX = None,
        stages: STAGES = False,
    ) -> Response:
        t0 = time.perf_counter()
        upload = await read_upload(image)
        results = [await run_pose(m, upload, bbox, "none", stages, time.perf_counter())
                   for m in reg.models.values()]
        width, height = upload[1]
        return json_response(CompareResponse(image={"width": width, "height": height}, results=results,
                                             total_ms=round((time.perf_counter() - t0) * 1e3, 2)))

    @app.post("/pose/render", response_class=Response, responses={
        200: {"content": {"image/png": {}}, "description": "the image with the skeleton drawn"},
        **ERRORS}, summary="The image with the estimated skeleton drawn on it (PNG)")
    async def render_pose(
        image: IMAGE,
        m: Annotated[LoadedModel, Depends(selected_model)],
        bbox: BBOX = None,
    ) -> Response:
        t0 = time.perf_counter()
        upload = await read_upload(image)
        result = await run_pose(m, upload, bbox, "none", False, t0)

        def draw() -> bytes:
            rgb = load_rgb(reopen(upload[0]))[0]
            xy = [(k.x, k.y) for k in result.keypoints]
            buf = io.BytesIO()
            draw_skeleton(rgb, xy, m.manifest["skeleton"], m.manifest["keypoints"]).save(buf, "PNG")
            return buf.getvalue()

        return Response(await run_in_threadpool(draw), media_type="image/png",
                        headers={"x-pose-model": m.id})

    @app.get("/models", response_model=ModelsResponse, summary="The models this server serves")
    async def list_models(reg: Annotated[Registry, Depends(registry)]) -> ModelsResponse:
        infos = []
        for m in reg.models.values():
            man = m.manifest
            infos.append(ModelInfo(
                id=m.id, architecture=man.get("architecture", m.id), paper=man.get("paper"),
                input_size=m.input_size, output_kind=man["output_kind"], stages=man.get("stages"),
                keypoints=man["keypoints"], skeleton=man["skeleton"], params=man.get("params"),
                flops=man.get("flops"), accuracy=man.get("accuracy"), providers=m.pool.providers))
        return ModelsResponse(models=infos, unavailable=reg.failed, skipped=reg.skipped)

    @app.get("/healthz", summary="Liveness: the process answers")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}},
             summary="Readiness: 200 only when every model in the model directory is loaded")
    async def readyz(request: Request) -> JSONResponse:
        reg: Registry | None = getattr(request.app.state, "registry", None)
        if reg is None:
            return JSONResponse({"ready": False, "models": {}, "unavailable": {}}, 503)
        body = ReadyResponse(ready=bool(reg.models) and not reg.failed,
                             models={k: v.pool.providers for k, v in reg.models.items()},
                             unavailable=reg.failed)
        return JSONResponse(body.model_dump(), 200 if body.ready else 503)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        """The demo page: upload a photo, pick an architecture, see joints, heatmaps, stages."""
        return FileResponse(STATIC / "index.html", media_type="text/html")

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
limit_malloc_arenas()
app = create_app()
