"""``poseserve detector``: ship the pretrained person detector into the model directory.

Copies YOLOX-Nano (COCO, Apache-2.0) from ``$POSE_PRETRAINED_DIR`` (default
../shared/pretrained) as ``person_detector.onnx`` with its LICENSE, and writes its typed
manifest: input format, output layout, the class kept, default thresholds, origin and
licence. The service finds it by its manifest's ``kind: detector``.

``--input-size``: the published graph is fixed at 416 px, but YOLOX is fully convolutional
with its box decoding outside the graph, so the same weights run at any multiple of 32;
the graph's input and output dimensions are rewritten for the size chosen (the anchor
grid, and so the output's length, follows the input). Smaller inputs cost quadratically
less and miss small people: ``poseserve eval-pipeline`` measures what a size gives up.
The service ships it at 512 px: on coco_dev's everyday photos that size found the most
people for whole-photo keypoint AP (416 → 480 → 512 → 576 → 640 px, docs/accuracy.md), at
about 1.5× the detector's cost of 416.
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
PUBLISHED_SIZE = 416  # the published graph's input
INPUT_SIZE = 512  # what ships: the best whole-photo AP of the sizes measured
# Defaults: YOLOX's usual demo score threshold and the NMS IoU its README gives; not tuned
# here (docs/pipeline.md measures the pipeline at them). Requests may override the score.
SCORE_THRESHOLD = 0.35
IOU_THRESHOLD = 0.45


def resized_graph(src: Path, dst: Path, size: int) -> None:
    """The graph with its input fixed at ``size``² and its output at that size's anchor count."""
    import onnx

    model = onnx.load(str(src))
    for dim in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        dim.dim_value = size
    model.graph.output[0].type.tensor_type.shape.dim[1].dim_value = anchor_points(size)
    del model.graph.value_info[:]  # intermediate shapes inferred for 416 would contradict the new size
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def anchor_points(size: int) -> int:
    return sum((size // s) ** 2 for s in STRIDES)


def package(source_dir: Path, out_dir: Path, size: int = INPUT_SIZE) -> DetectorManifest:
    src = source_dir / SOURCE
    if sha256_file(src) != EXPECTED_SHA256:
        raise SystemExit(f"{src} is not the YOLOX-Nano file documented in shared/pretrained/README.md")
    if size % max(STRIDES) or size < 2 * max(STRIDES):
        raise SystemExit(f"--input-size {size}: YOLOX needs a multiple of {max(STRIDES)}, at least {2 * max(STRIDES)}")
    out_dir.mkdir(parents=True, exist_ok=True)
    dst = out_dir / f"{DETECTOR_ID}.onnx"
    if size == PUBLISHED_SIZE:
        shutil.copyfile(src, dst)
    else:
        resized_graph(src, dst, size)
    shutil.copyfile(src.with_name("LICENSE"), out_dir / f"{DETECTOR_ID}.LICENSE")
    resized = "" if size == PUBLISHED_SIZE else f"; input resized from the published {PUBLISHED_SIZE} px to {size} px"
    manifest = DetectorManifest(
        id=DETECTOR_ID, onnx=f"{DETECTOR_ID}.onnx", sha256=sha256_file(dst), architecture="YOLOX-Nano",
        input={"name": "images", "shape": [1, 3, size, size], "size": size,
               "color": "BGR", "scale": "raw 0-255 (no mean/std)",
               "letterbox": f"resize keeping aspect ratio so the long side fits {size}, paste "
                            f"top-left, pad with {LETTERBOX_FILL}", "batch": "fixed at 1"},
        output={"name": "output", "shape": [1, anchor_points(size), 85], "strides": list(STRIDES),
                "layout": "per anchor point of the stride 8/16/32 grids (row-major): cx, cy, w, h in "
                          "grid units, objectness, 80 COCO class scores",
                "decoding": "models/detection.py: cx = (cx + gx) * stride, w = exp(w) * stride; "
                            "score = objectness x class score; NMS"},
        classes=["person"], score_threshold=SCORE_THRESHOLD, iou_threshold=IOU_THRESHOLD,
        origin="Megvii YOLOX-Nano COCO weights (YOLOX release 0.1.1rc0), ONNX opset 11, via the public "
               "repository Kazuhito00/Detection-PoseEstimation-Pipeline commit 7121ff8 "
               "(Detector/yolox/model/); published COCO val box AP 25.8 (80 classes)" + resized,
        licence="Apache-2.0", licence_file=f"{DETECTOR_ID}.LICENSE")
    manifest.save(out_dir / f"{DETECTOR_ID}.json")
    return manifest


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--pretrained", type=Path,
                   default=Path(os.environ.get("POSE_PRETRAINED_DIR", "../shared/pretrained")))
    p.add_argument("--out", type=Path, default=SHIPPED_DIR)
    p.add_argument("--input-size", type=int, default=INPUT_SIZE,
                   help=f"detector input side in pixels, a multiple of 32 (default {INPUT_SIZE}; "
                        f"the published graph's: {PUBLISHED_SIZE})")


def main(args: argparse.Namespace) -> None:
    m = package(args.pretrained, args.out, args.input_size)
    print(f"{args.out / m.onnx} sha256={m.sha256}")
