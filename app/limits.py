"""Upload limits enforced while the body streams in: size and time.

Size: a declared ``Content-Length`` over the limit is refused before a byte is read; a
body that streams past the limit (chunked, or a lying header) is cut off as soon as it
crosses it, so a 1 GB upload never sits in memory or on disk.

Time: a client that stops sending (``read_timeout_s`` without a byte) or drips its body
(``body_timeout_s`` for the whole of it) is answered 408 and disconnected, instead of
holding a connection, a spooled file and a worker's attention indefinitely. The headers'
own deadline is the protocol's job (``app.protocol``): a request reaches ASGI only once
its headers are complete.

Answers are JSON like every other error (Starlette's own limiter answers in plain text).
"""
from __future__ import annotations

import asyncio
import json
import time

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CLOSE = {"Connection": "close"}


class BodyLimits:
    def __init__(self, app: ASGIApp, max_bytes: int, read_timeout_s: float = 10.0,
                 body_timeout_s: float = 120.0, per_path: dict[str, int] | None = None) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.per_path = per_path or {}  # routes with their own size limit (video clips)
        self.read_timeout_s = read_timeout_s
        self.body_timeout_s = body_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.per_path.get(scope["path"], self.max_bytes)
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_bytes:
            await self._refuse(send, max_bytes)
            return
        received = 0
        deadline = time.monotonic() + self.body_timeout_s
        body_done = False

        async def limited_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # after the body only a disconnect can come: no deadline applies
                return await receive()
            wait = min(self.read_timeout_s, deadline - time.monotonic())
            try:
                message = await asyncio.wait_for(receive(), max(wait, 0.0))
            except asyncio.TimeoutError:
                raise HTTPException(408, "request body not received in time: the upload stalled",
                                    headers=CLOSE) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    raise HTTPException(413, self._detail(max_bytes), headers=CLOSE)
                body_done = not message.get("more_body", False)
            return message

        await self.app(scope, limited_receive, send)

    @staticmethod
    def _detail(max_bytes: int) -> str:
        return f"upload larger than the {max_bytes}-byte limit"

    async def _refuse(self, send: Send, max_bytes: int) -> None:
        body = json.dumps({"detail": self._detail(max_bytes)}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})
