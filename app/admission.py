"""Admission before the upload: refuse a request the pools cannot serve in time, unread.

Why a middleware: FastAPI reads the multipart body before the endpoint (and the pool)
sees the request, so a refusal decided there costs the client its whole upload and the
server the bandwidth. The model (``model``), and whether the detector runs (``bbox``,
``detect``), are in the query string, so the pools a request will need — and their
expected wait (``SessionPool.admission``) — are known from the request line alone.
The pools ask the same question again when the request reaches them.
"""
from __future__ import annotations

import json
from urllib.parse import parse_qs

from starlette.types import ASGIApp, Receive, Scope, Send

from app.batching import MicroBatcher
from app.pool import Overloaded, SessionPool
from app.registry import Registry
from app.settings import Settings

INFERENCE_PATHS = frozenset({"/pose", "/pose/render", "/pose/compare", "/pose/video"})
FALSE_VALUES = frozenset({"0", "false", "f", "no", "n", "off"})  # pydantic's false spellings


def runners_for(registry: Registry, settings: Settings, path: str, query: bytes
                ) -> list[tuple[str, SessionPool | MicroBatcher]]:
    """(graph id, pool or micro-batcher) for every graph this request will run on."""
    params = parse_qs(query.decode("latin-1"))
    first = {k: v[0] for k, v in params.items() if v}
    if path == "/pose/compare":
        try:
            runners = [(m.id, m.runner) for m in registry.compared(first.get("models"))]
        except KeyError:  # the route answers 404 for it
            runners = []
    else:
        model = registry.models.get(first.get("model") or registry.default_for(settings.default_model))
        runners = [] if model is None else [(model.id, model.runner)]
    detects = not first.get("bbox") and first.get("detect", "true").lower() not in FALSE_VALUES
    if detects and registry.detector is not None:
        runners.append((registry.detector.id, registry.detector.pool))
    return runners


class AdmissionGate:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST" and scope["path"] in INFERENCE_PATHS:
            state = scope["app"].state
            registry = getattr(state, "registry", None)
            if registry is not None:
                for graph_id, runner in runners_for(registry, state.settings, scope["path"],
                                                    scope.get("query_string", b"")):
                    refused = runner.admission()
                    if refused is not None:
                        state.metrics.rejected.labels(graph_id, "busy").inc()
                        await self._refuse(send, refused)
                        return
        await self.app(scope, receive, send)

    @staticmethod
    async def _refuse(send: Send, refused: Overloaded) -> None:
        body = json.dumps({"detail": f"server busy: {refused}"}).encode()
        await send({"type": "http.response.start", "status": 503,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"retry-after", refused.retry_after.encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
