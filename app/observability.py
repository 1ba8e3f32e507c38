"""Request id, access log line and request metrics for every call, as plain ASGI middleware.

Plain ASGI rather than ``@app.middleware("http")``: Starlette's ``BaseHTTPMiddleware``
runs the endpoint in a separate task and streams the response through memory channels,
which cost a measurable share of a few-millisecond inference (docs/benchmarks.md).
"""
from __future__ import annotations

import json
import logging
import re
import time
import uuid
from contextvars import ContextVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.metrics import Metrics

log = logging.getLogger("poseserve")
# A client's x-request-id is kept only when it is plainly an id: it is echoed in a header
# and written to the log, where newlines or control bytes would forge log lines.
SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
# The current request's id, for log lines written below the middleware: clients get
# generic error messages, the log gets the details under the id the client was given.
current_request_id: ContextVar[str] = ContextVar("request_id", default="-")


def request_id_from(headers: dict[bytes, bytes]) -> str:
    given = headers.get(b"x-request-id", b"").decode("latin-1")
    return given if SAFE_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]


class RequestObserver:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        request_id = request_id_from(headers)
        current_request_id.set(request_id)
        start = time.perf_counter()
        status = 500
        started = False

        async def observed_send(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []),
                                      (b"x-request-id", request_id.encode("latin-1"))]
            await send(message)

        try:
            await self.app(scope, receive, observed_send)
        except Exception:  # never leak a stack trace to the client
            log.exception("request %s failed", request_id)
            if started:  # the response is half sent: nothing sensible left to say
                raise
            body = json.dumps({"detail": f"internal error (request id {request_id})"}).encode()
            await observed_send({"type": "http.response.start", "status": 500,
                                 "headers": [(b"content-type", b"application/json"),
                                             (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
        finally:
            elapsed = time.perf_counter() - start
            route = getattr(scope.get("route"), "path", "unmatched")
            self.metrics.requests.labels(scope["method"], route, str(status)).inc()
            self.metrics.latency.labels(route).observe(elapsed)
            log.info("%s %s %s %d %.1fms", request_id, scope["method"], scope["path"], status,
                     elapsed * 1000)
