"""Person detection geometry for the YOLOX detector: letterbox in, boxes out.

Torch-free and written once: the service runs it around the detector's session, and the
pipeline evaluation (``models.evaluate_pipeline``) runs the very same code, so the
measured recall is the served recall.

YOLOX's raw head (see ``../shared/pretrained/README.md``) returns, per anchor point of
the stride-8/16/32 grids in row-major order, ``[cx, cy, w, h, objectness, 80 class
scores]`` with the box still in grid units. Decoding: ``cx = (cx + gx) · stride``,
``w = exp(w) · stride``; score = objectness × class score; then non-maximum suppression.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.manifest import DetectorManifest, load_manifest
from models.runtime import create_session

SHIPPED_MODEL_DIR = Path(__file__).resolve().parent / "onnx"  # the shipped detector and pose models
LETTERBOX_FILL = 114  # YOLOX's padding grey
STRIDES = (8, 16, 32)


@dataclass(frozen=True)
class Detection:
    """A person box in original-image pixels: top-left (x, y), size (w, h), and score."""

    x: float
    y: float
    w: float
    h: float
    score: float

    @property
    def area(self) -> float:
        return self.w * self.h

    def as_xywh(self) -> tuple[float, float, float, float]:
        return self.x, self.y, self.w, self.h


def letterbox(img: Image.Image, size: int) -> tuple[np.ndarray, float]:
    """RGB image → (1, 3, size, size) float32 BGR 0–255, resized to fit and pasted top-left.

    Returns the tensor and the resize ratio (letterbox pixels per image pixel).
    """
    ratio = min(size / img.width, size / img.height)
    w, h = max(1, round(img.width * ratio)), max(1, round(img.height * ratio))
    canvas = np.full((size, size, 3), LETTERBOX_FILL, np.uint8)
    canvas[:h, :w] = np.asarray(img.convert("RGB").resize((w, h), Image.Resampling.BILINEAR))
    return np.ascontiguousarray(canvas[..., ::-1].transpose(2, 0, 1)[None], dtype=np.float32), ratio


def grids(size: int, strides: Sequence[int] = STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """Anchor points (A, 2) as (gx, gy) cells and each point's stride (A, 1), head order."""
    cells, scale = [], []
    for s in strides:
        n = size // s
        gy, gx = np.mgrid[0:n, 0:n]
        cells.append(np.stack([gx.ravel(), gy.ravel()], 1))
        scale.append(np.full((n * n, 1), s))
    return np.concatenate(cells).astype(np.float32), np.concatenate(scale).astype(np.float32)


def decode(raw: np.ndarray, size: int, class_id: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw head (A, 5 + C) → boxes (A, 4) as x1, y1, x2, y2 in letterbox pixels, scores (A,)."""
    cells, stride = grids(size)
    if raw.shape[0] != cells.shape[0]:
        raise ValueError(f"head has {raw.shape[0]} anchor points; a {size}px input has {cells.shape[0]}")
    centre = (raw[:, :2] + cells) * stride
    half = np.exp(np.minimum(raw[:, 2:4], 20.0)) * stride / 2  # the clamp keeps exp finite
    boxes = np.concatenate([centre - half, centre + half], 1)
    return boxes, raw[:, 4] * raw[:, 5 + class_id]


def iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x1y1x2y2 box with each of (N, 4) boxes."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda b: np.clip(b[..., 2] - b[..., 0], 0, None) * np.clip(b[..., 3] - b[..., 1], 0, None)  # noqa: E731
    return inter / np.maximum(area(box) + area(boxes) - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> list[int]:
    """Greedy non-maximum suppression: indices kept, highest score first."""
    order = np.argsort(-scores, kind="stable")
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        order = rest[iou(boxes[best], boxes[rest]) <= iou_threshold]
    return keep


def people(raw: np.ndarray, size: int, ratio: float, image_size: tuple[int, int], min_score: float,
           iou_threshold: float, max_people: int, class_id: int = 0) -> list[Detection]:
    """The detector's raw output for one image → people in image pixels, most prominent first.

    Boxes are clipped to the image; "prominent" = score × box area, so the large, sure
    person in front comes before a small, sure one in the background.
    """
    boxes, scores = decode(raw, size, class_id)
    candidates = np.flatnonzero(scores >= min_score)
    kept = candidates[nms(boxes[candidates], scores[candidates], iou_threshold)]
    width, height = image_size
    found = []
    for i in kept:
        x1, y1, x2, y2 = (boxes[i] / ratio).tolist()
        x1, y1 = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
        x2, y2 = min(max(x2, 0.0), width), min(max(y2, 0.0), height)
        if x2 - x1 >= 1 and y2 - y1 >= 1:
            found.append(Detection(x1, y1, x2 - x1, y2 - y1, float(scores[i])))
    found.sort(key=lambda d: d.score * d.area, reverse=True)
    return found[:max_people]


# Joints scored below this count as not seen when a person's confidence is taken: they say
# where the joint would be, not how sure the model is of the person (SimpleBaseline's
# rescoring; on coco_dev, 0.1-0.4 all ranked people better than the plain mean).
SEEN_JOINT_SCORE = 0.2


def person_score(detector_score: float | None, joint_scores: Sequence[float | None] | None) -> float:
    """A person's confidence, as COCO AP ranks people: the detector's score (1 for a box not
    detected) × the mean score of the joints scored above ``SEEN_JOINT_SCORE`` (0 when none
    is; heatmap models: coordinate regressors have no joint scores, and count as 1)."""
    scores = [float(s) for s in (() if joint_scores is None else joint_scores) if s is not None]
    pose = 1.0  # a coordinate regressor: no joint scores to weigh by
    if scores:
        seen = [s for s in scores if s > SEEN_JOINT_SCORE]
        pose = sum(seen) / len(seen) if seen else 0.0
    return (1.0 if detector_score is None else float(detector_score)) * pose


@dataclass
class Detector:
    """The shipped detector outside the service (evaluation, training crops): session + manifest,
    called on a PIL image, with the manifest's thresholds unless told otherwise."""

    session: object
    manifest: DetectorManifest

    @classmethod
    def load(cls, model_dir: Path = SHIPPED_MODEL_DIR, threads: int = 0) -> Detector:
        manifest = load_manifest(model_dir / "person_detector.json")
        assert isinstance(manifest, DetectorManifest)
        return cls(create_session(manifest.onnx_path(model_dir / "person_detector.json"), threads), manifest)

    def __call__(self, img: Image.Image, min_score: float | None = None, max_people: int = 10) -> list[Detection]:
        size = int(self.manifest.input["size"])
        x, ratio = letterbox(img, size)
        raw = self.session.run(None, {"images": x})[0][0]
        score = self.manifest.score_threshold if min_score is None else min_score
        return people(raw, size, ratio, img.size, score, self.manifest.iou_threshold, max_people)
