"""Fixtures only (helpers live in ``tests.helpers``): a tiny-model directory exported once
per session, an in-process client and a real server on loopback."""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import export_tiny_models


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A model directory with all five architectures, random weights, real manifests."""
    pytest.importorskip("torch")
    return export_tiny_models(tmp_path_factory.mktemp("onnx"))


@pytest.fixture(scope="session")
def client(model_dir):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    settings = Settings(model_dir=model_dir, pool_size=2, intra_op_threads=1, max_upload_bytes=2_000_000,
                        max_pixels=4_000_000)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.fixture
def server(model_dir):
    """The real service in a subprocess (the benchmarks' launcher): yields (url, process)."""
    from benchmarks.bench import Server

    srv = Server(model_dir, threads=1, pool=1, graceful_timeout=10)
    yield srv.url, srv.proc
    if srv.proc.poll() is None:
        srv.proc.kill()
        srv.proc.wait(10)
