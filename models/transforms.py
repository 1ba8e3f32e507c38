"""Crop geometry and normalisation: the one place pixels are turned into model input.

Torch-free on purpose. Like SimpleBaseline's ``transforms`` module, it sits at the
bottom of the dependency graph: the training-data cache, evaluation, export calibration
and the service all import it, so a crop for training and a crop for serving are made by
the very same function and preprocessing skew between them is impossible.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

# The model sees a square of side CROP_MARGIN × the person box's longer side.
CROP_MARGIN = 1.25
# Padding colour for crop regions outside the image: the ImageNet mean, so that padding
# carries (almost) no signal after normalisation.
PAD_RGB = (124, 116, 104)
# Normalisation of the from-scratch models (ImageNet statistics); pretrained trunks bring
# their own (``models.backbone``). Either way it is recorded in the manifest's ``input``.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class CropBox:
    """A square region of the image: top-left corner and side length, in image pixels.

    A point ``u`` in normalised crop coordinates ([0, 1] across the crop) is the image
    point ``(x0 + u_x * side, y0 + u_y * side)``.
    """

    x0: float
    y0: float
    side: float

    @classmethod
    def around(cls, x: float, y: float, w: float, h: float, margin: float = CROP_MARGIN) -> CropBox:
        """The square crop centred on box (x, y, w, h) with side ``margin * max(w, h)``."""
        side = max(w, h) * margin
        return cls(x + w / 2 - side / 2, y + h / 2 - side / 2, side)

    def scaled(self, factor: float) -> CropBox:
        """The same region in an image resized by ``factor``."""
        return CropBox(self.x0 * factor, self.y0 * factor, self.side * factor)

    def to_image(self, uv: np.ndarray) -> np.ndarray:
        """Map normalised crop coordinates (..., 2) to image pixel coordinates."""
        return np.asarray(uv, dtype=np.float64) * self.side + np.array([self.x0, self.y0])

    def to_crop(self, xy: np.ndarray) -> np.ndarray:
        """Map image pixel coordinates (..., 2) to normalised crop coordinates."""
        return (np.asarray(xy, dtype=np.float64) - np.array([self.x0, self.y0])) / self.side


def person_box(joints: np.ndarray, valid: np.ndarray) -> tuple[float, float, float, float]:
    """Tight (x, y, w, h) box around the annotated joints (at least 8 px each way)."""
    pts = joints[valid] if valid.any() else joints
    lo, hi = pts.min(0), pts.max(0)
    w, h = max(hi[0] - lo[0], 8.0), max(hi[1] - lo[1], 8.0)
    cx, cy = (lo + hi) / 2
    return cx - w / 2, cy - h / 2, w, h


def crop_square(img: Image.Image, box: CropBox, size: int) -> np.ndarray:
    """Resample ``box`` of ``img`` to a ``size``×``size`` RGB uint8 array (HWC).

    Regions outside the image are padded with ``PAD_RGB``. Large reductions first use
    Pillow's box-filter ``reduce`` so that downscaling does not alias.
    """
    scale = box.side / size
    x0, y0, side = box.x0, box.y0, box.side
    factor = int(scale // 2)
    if factor >= 2:
        img = img.reduce(factor)
        x0, y0, side = x0 / factor, y0 / factor, side / factor
        scale = side / size
    out = img.transform((size, size), Image.Transform.AFFINE,
                        (scale, 0.0, x0, 0.0, scale, y0),
                        resample=Image.Resampling.BILINEAR, fillcolor=PAD_RGB)
    return np.asarray(out, dtype=np.uint8)


def normalise(crops: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 crops (N, H, W, 3) or (H, W, 3) → contiguous float32 (N, 3, H, W).

    ``(pixel / 255 - mean) / std`` per channel: the manifest's ``input`` spec.
    """
    batch = crops[None] if crops.ndim == 3 else crops
    x = batch.astype(np.float32) / 255.0
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
