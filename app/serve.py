"""``poseserve serve``: uvicorn with the service's production settings."""
from __future__ import annotations

import argparse


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1",
                   help="interface to bind (default loopback only; the container passes 0.0.0.0)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--graceful-timeout", type=int, default=20,
                   help="seconds in-flight requests get to finish on SIGTERM")


def main(args: argparse.Namespace) -> None:
    import uvicorn

    uvicorn.run("app.main:app", host=args.host, port=args.port, workers=1,
                timeout_graceful_shutdown=args.graceful_timeout, access_log=False)
