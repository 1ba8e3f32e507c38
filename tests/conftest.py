"""Shared fixtures: tiny random-weight models exported once per test session.

Random weights are for tests only; they exercise every code path of export and
serving in seconds, without the shipped trained models.
"""
from __future__ import annotations

import io
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

ARCHITECTURES = ("deeppose", "tompson", "cpm", "ief", "hourglass")
TEST_INPUT = 32
TINY = {"deeppose": {"width": 4, "fc": 16}, "tompson": {"width": 4}, "cpm": {"width": 4},
        "ief": {"width": 4, "fc": 16}, "hourglass": {"width": 8, "depth": 2}}


def tiny_model(name: str):
    import torch

    from models.architectures import build_model

    torch.manual_seed(0)
    return build_model(name, input_size=TEST_INPUT, **TINY[name]).eval()


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """A model directory with all five architectures, random weights, real manifests."""
    pytest.importorskip("torch")
    from export.onnx_export import Checkpoint, export_model
    from models.train import MEAN, STD

    out = tmp_path_factory.mktemp("onnx")
    for name in ARCHITECTURES:
        ckpt = Checkpoint(tiny_model(name), {"model": name, "input_size": TEST_INPUT}, MEAN, STD,
                          {"epoch": 0, "elapsed": 0})
        export_model(name, ckpt, out)
    return out


def image_bytes(fmt: str = "JPEG", size: tuple[int, int] = (120, 160), mode: str = "RGB", **save) -> bytes:
    """A small synthetic photo-like image (a bright figure on a gradient)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    rgb = np.stack([xx * 255 // max(w - 1, 1), yy * 255 // max(h - 1, 1),
                    np.full_like(xx, 90)], -1).astype(np.uint8)
    rgb[h // 4: 3 * h // 4, w // 3: 2 * w // 3] = 230
    img = Image.fromarray(rgb, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


@pytest.fixture(scope="session")
def client(model_dir):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    settings = Settings(model_dir=model_dir, pool_size=2, intra_op_threads=1, max_upload_bytes=2_000_000,
                        max_pixels=4_000_000)
    with TestClient(create_app(settings)) as c:
        yield c


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(model_dir):
    port = free_port()
    env = dict(os.environ, POSE_MODEL_DIR=str(model_dir), POSE_POOL_SIZE="1", POSE_INTRA_OP_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "app.cli", "serve", "--host", "127.0.0.1",
                             "--port", str(port), "--graceful-timeout", "10"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail(f"server did not become ready: {proc.stdout.read()}")
    yield url, proc
    if proc.poll() is None:
        proc.kill()
        proc.wait(10)
