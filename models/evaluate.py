"""``poseserve eval``: PCK on the LSP test half, through the serving preprocessing.

Each test photo is read from disk at its original size, cropped around the ground-truth
person box with the manifest's margin by ``app.imaging.crop_square`` (as the service
does with a ``bbox``), run through the ONNX graph or the PyTorch checkpoint, and the
keypoints mapped back to image pixels, where PCK is measured. So the number measures
exactly what ``POST /pose?bbox=…`` returns.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from app.imaging import CropBox, crop_square
from models.data import data_dir, load_lsp, person_box, LSP_TEST
from models.keypoints import KEYPOINT_NAMES
from models.metrics import pck, pck_summary

THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(0, 51))
# What a manifest's "accuracy" keeps of an evaluation (the curves stay in docs/results/).
ACCURACY_KEYS = ("dataset", "pck@0.2", "pck@0.1", "per_joint_pck@0.2", "per_stage_pck@0.2")


def accuracy_summary(result: dict) -> dict:
    """The part of an ``evaluate`` result that goes into the model's manifest."""
    return {k: result[k] for k in ACCURACY_KEYS}


def _onnx_runner(path: Path) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    import onnxruntime as ort

    manifest = json.loads(path.with_suffix(".json").read_text())
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]

    def run(batch: np.ndarray) -> np.ndarray:
        return dict(zip(names, session.run(None, {"image": batch})))["stage_keypoints"]

    return run, manifest["input"]


def _torch_runner(path: Path) -> tuple[Callable[[np.ndarray], np.ndarray], dict]:
    import torch

    from export.onnx_export import load_checkpoint
    from models.data import CROP_MARGIN
    from models.inference import InferenceGraph

    ckpt = load_checkpoint(path)
    graph = InferenceGraph(ckpt.model).eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return graph(torch.from_numpy(batch))[1].numpy()

    return run, {"size": ckpt.config["input_size"], "mean": ckpt.mean, "std": ckpt.std,
                 "crop_margin": CROP_MARGIN}


def evaluate(model_id: str, data: str | None = None, onnx_path: Path | None = None,
             checkpoint: Path | None = None, limit: int = 0, batch: int = 50) -> dict:
    run, spec = _onnx_runner(Path(onnx_path)) if onnx_path else _torch_runner(Path(checkpoint))
    samples = [load_lsp(data_dir(data))[i] for i in LSP_TEST]
    if limit:
        samples = samples[:limit]
    size, margin = int(spec["size"]), float(spec["crop_margin"])
    mean, std = np.asarray(spec["mean"], np.float32), np.asarray(spec["std"], np.float32)
    preds, gts, valids = [], [], []
    for start in range(0, len(samples), batch):
        chunk = samples[start:start + batch]
        boxes = [CropBox.around(*person_box(s.joints, s.valid), margin) for s in chunk]
        crops = []
        for s, box in zip(chunk, boxes):
            with Image.open(s.path) as img:
                crops.append(crop_square(img.convert("RGB"), box, size))
        x = ((np.stack(crops).astype(np.float32) / 255.0 - mean) / std).transpose(0, 3, 1, 2)
        stage_kp = run(np.ascontiguousarray(x))  # (N, T, K, 2) normalised
        preds.append(np.stack([[box.to_image(stage_kp[i, t]) for t in range(stage_kp.shape[1])]
                               for i, box in enumerate(boxes)]))
        gts.extend(s.joints for s in chunk)
        valids.extend(s.valid for s in chunk)
    pred, gt, valid = np.concatenate(preds), np.stack(gts), np.stack(valids)
    final = pred[:, -1]
    mean20, per_joint = pck_summary(final, gt, valid, 0.2)
    curve = []
    for a in THRESHOLDS:
        hits, counted = pck(final, gt, valid, a)
        curve.append(round(float(hits.sum() / counted.sum()), 4))
    return {
        "model": model_id,
        "source": str(onnx_path or checkpoint),
        "dataset": f"LSP test im1001-im{1000 + len(samples)} ({len(samples)} images, "
                   "ground-truth person box, original resolution)",
        "pck@0.2": round(mean20, 4),
        "pck@0.1": round(pck_summary(final, gt, valid, 0.1)[0], 4),
        "per_joint_pck@0.2": {n: round(float(v), 4) for n, v in zip(KEYPOINT_NAMES, per_joint)},
        "per_stage_pck@0.2": [round(pck_summary(pred[:, t], gt, valid, 0.2)[0], 4)
                              for t in range(pred.shape[1])],
        "pck_curve": {"thresholds": list(THRESHOLDS), "pck": curve},
    }
