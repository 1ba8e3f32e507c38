"""``poseserve detector``: ship the pretrained person detector into the model directory.

Copies YOLOX-Nano (COCO, Apache-2.0) from ``$POSE_PRETRAINED_DIR`` (default
../shared/pretrained) as ``person_detector.onnx`` with its LICENSE, and writes its typed
manifest: input format, output layout, the class kept, default thresholds, origin and
licence. The service finds it by its manifest's ``kind: detector``.
"""
from __future__ import annotations

import argparse
import os
import shutil
from pathlib import Path

from export.onnx_export import SHIPPED_DIR
from models.detection import LETTERBOX_FILL, STRIDES
from models.manifest import DetectorManifest, sha256_file

DETECTOR_ID = "person_detector"
SOURCE = "person_detector/yolox_nano_416x416.onnx"
EXPECTED_SHA256 = "695e750a5d5754bb5a8d5325643b59282191a7e7a564e435a415fd3c578eab14"
INPUT_SIZE = 416
# Defaults: YOLOX's usual demo score threshold and the NMS IoU its README gives; not tuned
# here (docs/pipeline.md measures the pipeline at them). Requests may override the score.
SCORE_THRESHOLD = 0.35
IOU_THRESHOLD = 0.45


def package(source_dir: Path, out_dir: Path) -> DetectorManifest:
    src = source_dir / SOURCE
    if sha256_file(src) != EXPECTED_SHA256:
        raise SystemExit(f"{src} is not the YOLOX-Nano file documented in shared/pretrained/README.md")
    out_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, out_dir / f"{DETECTOR_ID}.onnx")
    shutil.copyfile(src.with_name("LICENSE"), out_dir / f"{DETECTOR_ID}.LICENSE")
    manifest = DetectorManifest(
        id=DETECTOR_ID, onnx=f"{DETECTOR_ID}.onnx", sha256=EXPECTED_SHA256, architecture="YOLOX-Nano",
        input={"name": "images", "shape": [1, 3, INPUT_SIZE, INPUT_SIZE], "size": INPUT_SIZE,
               "color": "BGR", "scale": "raw 0-255 (no mean/std)",
               "letterbox": f"resize keeping aspect ratio so the long side fits {INPUT_SIZE}, paste "
                            f"top-left, pad with {LETTERBOX_FILL}", "batch": "fixed at 1"},
        output={"name": "output", "shape": [1, 3549, 85], "strides": list(STRIDES),
                "layout": "per anchor point of the stride 8/16/32 grids (row-major): cx, cy, w, h in "
                          "grid units, objectness, 80 COCO class scores",
                "decoding": "models/detection.py: cx = (cx + gx) * stride, w = exp(w) * stride; "
                            "score = objectness x class score; NMS"},
        classes=["person"], score_threshold=SCORE_THRESHOLD, iou_threshold=IOU_THRESHOLD,
        origin="Megvii YOLOX-Nano COCO weights (YOLOX release 0.1.1rc0), ONNX opset 11, via the public "
               "repository Kazuhito00/Detection-PoseEstimation-Pipeline commit 7121ff8 "
               "(Detector/yolox/model/); published COCO val box AP 25.8 (80 classes)",
        licence="Apache-2.0", licence_file=f"{DETECTOR_ID}.LICENSE")
    manifest.save(out_dir / f"{DETECTOR_ID}.json")
    return manifest


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pretrained", type=Path,
                   default=Path(os.environ.get("POSE_PRETRAINED_DIR", "../shared/pretrained")))
    p.add_argument("--out", type=Path, default=SHIPPED_DIR)


def main(args: argparse.Namespace) -> None:
    m = package(args.pretrained, args.out)
    print(f"{args.out / m.onnx} sha256={m.sha256}")
