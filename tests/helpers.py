"""Test helpers shared across the suite: tiny random-weight models and synthetic images.

Random weights are for tests only; they exercise every code path of export and serving
in seconds, without the shipped trained models.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from models.architectures import ARCHITECTURES as REGISTRY

ARCHITECTURES = tuple(REGISTRY)
ROOT = Path(__file__).resolve().parent.parent
# The shared datasets (never copied into the repo): tests that need them skip without them.
DATA = Path(os.environ.get("POSE_DATA_DIR", ROOT.parent / "shared" / "datasets"))
TEST_INPUT = 32
# The smallest sensible options of every registered architecture (a new one must add its own).
TINY = {"deeppose": {"width": 4, "fc": 16}, "tompson": {"width": 4}, "cpm": {"width": 4},
        "ief": {"width": 4, "fc": 16}, "hourglass": {"width": 8, "depth": 2}}


def tiny_model(name: str):
    import torch

    from models.architectures import build_model

    torch.manual_seed(0)
    return build_model(name, input_size=TEST_INPUT, **TINY[name]).eval()


def tiny_checkpoint(name: str):
    from models.checkpoint import Checkpoint
    from models.transforms import IMAGENET_MEAN, IMAGENET_STD

    return Checkpoint(tiny_model(name), {"model": name, "input_size": TEST_INPUT, "sigma": 2.0,
                                         "arch": {**TINY[name], "num_keypoints": tiny_model(name).num_keypoints}},
                      IMAGENET_MEAN, IMAGENET_STD, {"epoch": 0, "elapsed": 0})


def fake_cache(path: Path, n: int = 40, size: int = 40) -> Path:
    """A crop cache (``poseserve cache``'s format) of ``n`` random crops with random joints;
    LSP-like labels: the face points are missing."""
    from models.data import write_cache
    from models.keypoints import NUM_KEYPOINTS

    rng = np.random.default_rng(0)
    joints = rng.uniform(0.3, 0.7, (n, NUM_KEYPOINTS, 2)).astype(np.float32)
    valid = np.ones((n, NUM_KEYPOINTS), bool)
    valid[:, 14:] = False
    arrays = {f"{s}_{k}": v for s in ("train", "val") for k, v in
              (("images", rng.integers(0, 255, (n, size, size, 3), dtype=np.uint8)), ("joints", joints),
               ("valid", valid))}
    return write_cache(path, arrays)

SHIPPED = ROOT / "models" / "onnx"


def add_detector(out: Path) -> Path:
    """Copy the shipped person detector (real weights: it is small) into a model directory."""
    import shutil

    for suffix in (".onnx", ".json", ".LICENSE"):
        shutil.copy(SHIPPED / f"person_detector{suffix}", out)
    return out


def export_tiny_models(out: Path) -> Path:
    """A model directory with every architecture (random weights, real manifests) and the
    shipped person detector."""
    from export.onnx_export import export_model

    for name in ARCHITECTURES:
        export_model(tiny_checkpoint(name), out)
    return add_detector(out)


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


def clip_bytes(frames: int = 20, fmt: str = "mp4", codec: str = "mpeg4", size: tuple[int, int] = (160, 120),
               rate: int = 10, draw=None) -> bytes:
    """A small generated video: a bright block moving right on grey, or ``draw(i) → (H, W, 3)``."""
    import av

    w, h = size
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height = w, h
        stream.pix_fmt = "rgb8" if codec == "gif" else "yuv420p"
        for i in range(frames):
            if draw is None:
                rgb = np.full((h, w, 3), 90, np.uint8)
                rgb[h // 6: 5 * h // 6, 4 + 3 * i: w // 4 + 3 * i] = 220
            else:
                rgb = draw(i)
            for packet in stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()
