"""Operational routes: the model list, liveness, readiness, Prometheus metrics, the demo page."""
from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from app.deps import MetricsDep, RegistryDep, SettingsDep
from app.pipeline import flips
from app.registry import Registry
from app.schemas import DetectorInfo, ModelInfo, ModelsResponse, ReadyResponse

router = APIRouter(tags=["system"])
STATIC = Path(__file__).resolve().parent.parent / "static"


@router.get("/models", response_model=ModelsResponse, summary="The models this server serves")
async def list_models(reg: RegistryDep, settings: SettingsDep) -> ModelsResponse:
    infos = []
    for m in reg.models.values():
        man = m.manifest
        infos.append(ModelInfo(
            id=m.id, architecture=man.architecture, paper=man.paper, input_size=m.input_size,
            output_kind=man.output_kind, stages=man.stages,
            trained_stages=man.early_exit.of if man.early_exit else man.stages, keypoints=man.keypoints,
            skeleton=[list(e) for e in man.skeleton], coco_order=m.coco_order, flip_test=flips(m, None, settings),
            params=man.params, flops=man.flops,
            accuracy=man.accuracy, providers=m.pool.providers))
    detector = None
    if reg.detector is not None:
        d = reg.detector.manifest
        detector = DetectorInfo(id=d.id, architecture=d.architecture, input_size=reg.detector.input_size,
                                classes=d.classes, score_threshold=d.score_threshold,
                                iou_threshold=d.iou_threshold, origin=d.origin, licence=d.licence,
                                providers=reg.detector.pool.providers)
    return ModelsResponse(default_model=reg.default_for(settings.default_model), models=infos, detector=detector,
                          unavailable=reg.failed, skipped=reg.skipped)


@router.get("/healthz", summary="Liveness: the process answers")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyResponse, responses={503: {"model": ReadyResponse}},
            summary="Readiness: 200 only when every model in the model directory (the detector "
                    "included) is loaded")
async def readyz(request: Request) -> JSONResponse:
    reg: Registry | None = getattr(request.app.state, "registry", None)
    if reg is None:
        return JSONResponse({"ready": False, "models": {}, "unavailable": {}}, 503)
    body = ReadyResponse(ready=bool(reg.models) and not reg.failed,
                         models=reg.loaded,
                         unavailable=reg.failed)
    return JSONResponse(body.model_dump(), 200 if body.ready else 503)


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    """The demo page: upload a photo, pick an architecture, see joints, heatmaps, stages."""
    return FileResponse(STATIC / "index.html", media_type="text/html")


@router.get("/metrics", summary="Prometheus metrics", response_class=Response)
async def prometheus(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)
