"""uvicorn's HTTP protocol with a deadline on request headers.

Why: uvicorn has a keep-alive timeout between requests but none while a request's
headers arrive, so a client that opens a connection and sends half a request line
(slowloris) holds it forever, and enough of them exhaust the connection cap. Headers
reach ASGI only once complete, so no middleware can see them: the deadline has to live
in the protocol. The body's deadlines are ASGI-level (``app.limits``).
"""
from __future__ import annotations

import asyncio

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
                    b"content-length: 49\r\nconnection: close\r\n\r\n"
                    b'{"detail":"request headers not received in time"}')


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """Closes, with a 408, a connection whose request headers are not complete in time."""

    header_timeout_s: float = 10.0

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._header_timer: asyncio.TimerHandle | None = None
        self._arm()  # the first request's clock starts with the connection

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._header_timer is None:  # a later request on a kept-alive connection
            self._arm()

    def on_headers_complete(self) -> None:
        self._disarm()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_too_slow)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_too_slow(self) -> None:
        self._header_timer = None
        if not self.transport.is_closing():
            self.logger.info("closing %s: request headers not complete after %g s",
                             "%s:%d" % self.client if self.client else "a client", self.header_timeout_s)
            self.transport.write(TIMEOUT_RESPONSE)
            self.transport.close()


def protocol_with(header_timeout_s: float) -> type[HeaderDeadlineProtocol]:
    """The protocol class uvicorn instantiates per connection, with this deadline."""
    return type("HeaderDeadlineProtocol", (HeaderDeadlineProtocol,), {"header_timeout_s": header_timeout_s})
