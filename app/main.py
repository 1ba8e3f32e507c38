"""The FastAPI application: ``uvicorn app.main:app``.

This module only composes: settings, the lifespan that loads every model (all sessions
created and warmed before the first request), the middleware stack and the routers.
Routes live in ``app.routers``, their dependencies in ``app.deps``, the request pipeline
in ``app.pipeline``.
"""
from __future__ import annotations

import asyncio
import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.middleware.cors import CORSMiddleware
from fastapi.staticfiles import StaticFiles

from app.admission import AdmissionGate
from app.limits import BodyLimits
from app.memory import limit_malloc_arenas
from app.metrics import Metrics
from app.observability import RequestObserver
from app.registry import load_registry
from app.routers import docs, pose, system, video
from app.security import SecurityHeaders
from app.settings import Settings, get_settings
from app.uploads import DecodePool


@asynccontextmanager
async def lifespan(app: FastAPI):
    app.state.registry = await run_in_threadpool(load_registry, app.state.settings)
    yield
    app.state.registry.close()
    app.state.decoder.close()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    app = FastAPI(
        title="poseserve", version="0.1.0", lifespan=lifespan, debug=False, docs_url=None, redoc_url=None,
        description="2D human pose estimation with five classic architectures "
                    "(DeepPose, Tompson et al., CPM, IEF, Stacked Hourglass), served from ONNX.")
    app.state.settings, app.state.metrics = settings, Metrics()
    app.state.decoder = DecodePool(settings.decode_workers, settings.queue_timeout_s)
    app.state.video_slots = asyncio.Semaphore(settings.video_max_concurrent)
    app.add_middleware(BodyLimits, max_bytes=settings.max_upload_bytes + 64 * 1024,  # + multipart framing
                       read_timeout_s=settings.read_timeout_s, body_timeout_s=settings.body_timeout_s,
                       per_path={"/pose/video": settings.video_max_bytes + 64 * 1024})
    app.add_middleware(AdmissionGate)  # outside the body limit: a refusal reads no body at all
    if settings.cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST"], allow_headers=["*"])
    app.add_middleware(SecurityHeaders)
    app.add_middleware(RequestObserver, metrics=app.state.metrics)  # added last = outermost
    app.include_router(pose.router)
    app.include_router(video.router)
    app.include_router(system.router)
    app.include_router(docs.router)
    app.mount(docs.ASSETS_URL, docs.assets(), name="docs-assets")
    app.mount("/static", StaticFiles(directory=system.STATIC), name="static")
    return app


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
limit_malloc_arenas()
app = create_app()
