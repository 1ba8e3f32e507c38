"""``poseserve serve``: uvicorn with the service's production settings.

Connection-level limits live here, where uvicorn is configured: the header deadline
(``POSE_HEADER_TIMEOUT_S``, ``app.protocol``) and the connection cap
(``POSE_MAX_CONNECTIONS``: uvicorn answers 503 beyond it).
"""
from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from app.settings import Settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default loopback only; the container passes 0.0.0.0)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--graceful-timeout", type=int, default=20,
                   help="seconds in-flight requests get to finish on SIGTERM")


def uvicorn_options(args: argparse.Namespace, settings: Settings | None = None) -> dict:
    from app.protocol import protocol_with
    from app.settings import get_settings

    settings = settings or get_settings()
    return dict(host=args.host, port=args.port, workers=1, access_log=False,
                timeout_graceful_shutdown=args.graceful_timeout,
                http=protocol_with(settings.header_timeout_s), limit_concurrency=settings.max_connections)


def main(args: argparse.Namespace) -> None:
    import uvicorn

    uvicorn.run("app.main:app", **uvicorn_options(args))
