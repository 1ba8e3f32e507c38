"""Security headers on every response, and a strict policy on the two HTML pages.

``nosniff`` everywhere (no response is ever reinterpreted as a script or page); on HTML
(``/`` and ``/docs``) a Content-Security-Policy that allows only this origin's own
scripts — both pages keep their scripts in files for that reason — and forbids framing
(clickjacking). Styles may be inline: Swagger UI sets them, and they cannot run code.
"""
from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                           "img-src 'self' data: blob:; media-src blob:; connect-src 'self'; object-src 'none'; "
                           "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
EVERY_RESPONSE = [(b"x-content-type-options", b"nosniff")]
HTML_RESPONSE = [(b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
                 (b"x-frame-options", b"DENY"), (b"referrer-policy", b"no-referrer")]


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                html = any(k.lower() == b"content-type" and v.startswith(b"text/html") for k, v in headers)
                message["headers"] = headers + EVERY_RESPONSE + (HTML_RESPONSE if html else [])
            await send(message)

        await self.app(scope, receive, with_headers)
