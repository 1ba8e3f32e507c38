"""The /pose pipeline between HTTP and the session pool: crop, normalise, map back.

Everything model-specific comes from the manifest; this module knows no architecture.
"""
from __future__ import annotations

import base64
import io
import math

import numpy as np
from PIL import Image

from app.imaging import CropBox, crop_square, load_rgb, reopen
from app.registry import LoadedModel
from app.schemas import HeatmapPNG, Heatmaps, Keypoint, StageKeypoints


def parse_bbox(text: str, width: int, height: int) -> tuple[float, float, float, float]:
    """Parse ``x,y,w,h`` (image pixels) and check it is a real box that overlaps the image."""
    parts = text.split(",")
    if len(parts) != 4:
        raise ValueError("bbox must be four numbers: x,y,w,h")
    try:
        x, y, w, h = (float(p) for p in parts)
    except ValueError:
        raise ValueError("bbox must be four numbers: x,y,w,h") from None
    if not all(math.isfinite(v) for v in (x, y, w, h)):
        raise ValueError("bbox values must be finite")
    if w <= 0 or h <= 0:
        raise ValueError("bbox width and height must be positive")
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        raise ValueError(f"bbox lies outside the {width}x{height} image")
    return x, y, w, h


def crop_for(model: LoadedModel, size: tuple[int, int],
             bbox: tuple[float, float, float, float] | None) -> CropBox:
    """The person box with the model's training margin, or the whole image (square, centred)."""
    if bbox is None:
        return CropBox.around(0, 0, size[0], size[1], 1.0)
    return CropBox.around(*bbox, float(model.manifest["input"].get("crop_margin", 1.25)))


def preprocess(model: LoadedModel, data: bytes, box: CropBox) -> np.ndarray:
    """Decode (reduced where the crop allows), crop, normalise: (1, 3, S, S) float32."""
    spec = model.manifest["input"]
    rgb, scale = load_rgb(reopen(data), box.side / model.input_size / 2)
    pixels = crop_square(rgb, box.scaled(1 / scale), model.input_size).astype(np.float32) / 255.0
    pixels = (pixels - np.asarray(spec["mean"], np.float32)) / np.asarray(spec["std"], np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[None])


def keypoints(model: LoadedModel, coords: np.ndarray, scores: np.ndarray | None, box: CropBox
              ) -> list[Keypoint]:
    """(K, 2) normalised crop coordinates → keypoints in original-image pixels."""
    xy = box.to_image(coords)
    return [Keypoint(id=i, name=name, x=round(float(xy[i, 0]), 2), y=round(float(xy[i, 1]), 2),
                     score=None if scores is None else round(float(scores[i]), 4))
            for i, name in enumerate(model.manifest["keypoints"])]


def stage_keypoints(model: LoadedModel, stages: np.ndarray, box: CropBox) -> list[StageKeypoints]:
    return [StageKeypoints(stage=t + 1, keypoints=keypoints(model, stages[t], None, box))
            for t in range(stages.shape[0])]


def heatmap_to_image(box: CropBox, height: int, width: int) -> list[list[float]]:
    """Affine A with [x, y] = A @ [col, row, 1]: heatmap cell centres → image pixels."""
    sx, sy = box.side / width, box.side / height
    return [[sx, 0.0, box.x0 + 0.5 * sx], [0.0, sy, box.y0 + 0.5 * sy]]


def encode_heatmaps(model: LoadedModel, maps: np.ndarray, fmt: str, box: CropBox) -> Heatmaps:
    """Per-joint maps as 8-bit PNGs (with their value range) or rounded float arrays."""
    k, h, w = maps.shape
    result = Heatmaps(source=model.manifest.get("heatmap_source", "predicted"), format=fmt,
                      height=h, width=w, to_image=heatmap_to_image(box, h, w))
    if fmt == "array":
        result.maps = np.round(maps.astype(np.float64), 4).tolist()
        return result
    names = model.manifest["keypoints"]
    encoded = []
    for i in range(k):
        lo, hi = float(maps[i].min()), float(maps[i].max())
        scaled = (maps[i] - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros((h, w))
        buf = io.BytesIO()
        Image.fromarray(np.round(scaled).astype(np.uint8), "L").save(buf, "PNG", compress_level=1)
        encoded.append(HeatmapPNG(name=names[i], png=base64.b64encode(buf.getvalue()).decode(),
                                  min=round(lo, 6), max=round(hi, 6)))
    result.maps_png = encoded
    return result
