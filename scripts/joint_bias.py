"""Are a model's joints off by a systematic shift (a labelling convention), or just scattered?

LSP and COCO place some joints differently (COCO's hips sit higher, towards the waist), and
the models here learn from both. A consistent shift could be undone by a per-dataset output;
scatter cannot. This script measures, on coco_dev's people (true boxes, the serving crop)
and the first LSP test people, each joint's median error in the person's own frame: *along*
the torso (shoulder midpoint → hip midpoint, + towards the feet) and *across* it, in torso
lengths; the predicted hip and shoulder widths over the true ones; and coco_dev's PCK@0.2
with the predicted hips moved along the predicted torso, the gain a shift could buy.

    python scripts/joint_bias.py --model hourglass --peer

Run it on an idle machine (it competes with a trainer for the same cores).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.evaluate import Person, coco_dev_people, lsp_test_people, movenet_runner, onnx_runner, predict  # noqa: E402
from models.keypoints import LSP_KEYPOINT_NAMES, LSP_TO_COCO  # noqa: E402
from models.metrics import pck_summary  # noqa: E402

BODY = sorted(LSP_TO_COCO)  # the LSP joints COCO shares (neck and head_top are LSP's alone)
R_HIP, L_HIP, R_SHOULDER, L_SHOULDER = (LSP_KEYPOINT_NAMES.index(n) for n in
                                        ("right_hip", "left_hip", "right_shoulder", "left_shoulder"))


def torso_frame(joints: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(N, 14, 2) → unit vectors along and across the torso, and its length, per person."""
    shoulders = (joints[:, R_SHOULDER] + joints[:, L_SHOULDER]) / 2
    hips = (joints[:, R_HIP] + joints[:, L_HIP]) / 2
    axis = hips - shoulders
    length = np.linalg.norm(axis, axis=1)
    along = axis / np.maximum(length, 1e-9)[:, None]
    return along, np.stack([-along[:, 1], along[:, 0]], 1), length


def bias(pred: np.ndarray, people: list[Person]) -> dict:
    gt, valid = np.stack([p.joints for p in people]), np.stack([p.valid for p in people])
    along, across, length = torso_frame(gt)
    ok = valid[:, [R_HIP, L_HIP, R_SHOULDER, L_SHOULDER]].all(1) & (length > 5)
    joints = {}
    for j in BODY:
        m = ok & valid[:, j]
        d = (pred[m, j] - gt[m, j]) / length[m, None]
        joints[LSP_KEYPOINT_NAMES[j]] = (round(float(np.median((d * along[m]).sum(1))), 3),
                                         round(float(np.median((d * across[m]).sum(1))), 3))

    def width_ratio(a: int, b: int) -> float:
        true = np.linalg.norm(gt[:, a] - gt[:, b], axis=1)
        m = ok & (true > 0)  # a joint pair labelled on one spot has no width to compare
        return round(float(np.median(np.linalg.norm(pred[m, a] - pred[m, b], axis=1) / true[m])), 3)

    return {"people": int(ok.sum()), "hip_width_ratio": width_ratio(R_HIP, L_HIP),
            "shoulder_width_ratio": width_ratio(R_SHOULDER, L_SHOULDER), "median_along_across": joints}


def hips_moved(pred: np.ndarray, people: list[Person], shifts: tuple[float, ...]) -> dict[float, float]:
    """PCK@0.2 with the predicted hips moved ``shift`` predicted torso lengths towards the feet."""
    gt, valid = np.stack([p.joints for p in people]), np.stack([p.valid for p in people])
    along, _, length = torso_frame(pred)
    out = {}
    for s in shifts:
        moved = pred.copy()
        moved[:, [R_HIP, L_HIP]] += (s * length[:, None] * along)[:, None]
        out[s] = round(pck_summary(moved, gt, valid, 0.2)[0], 4)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="hourglass", help="a model id in models/onnx")
    p.add_argument("--peer", action="store_true", help="also MoveNet Lightning (../shared/peers)")
    p.add_argument("--lsp", type=int, default=400, help="LSP test people measured (the first N)")
    args = p.parse_args()
    runners = {args.model: lambda: onnx_runner(Path("models/onnx") / f"{args.model}.onnx")}
    if args.peer:
        runners["movenet-lightning (peer)"] = movenet_runner
    kept, lsp = coco_dev_people(), lsp_test_people()[:args.lsp]
    coco = kept + coco_dev_people(squashed=True)  # the kept photos' people first
    for name, make in runners.items():
        runner = make()
        coco_pred = predict(runner, coco)[:, -1]
        print(name, "coco_dev", bias(coco_pred, coco), flush=True)
        print(name, f"LSP test (first {len(lsp)})", bias(predict(runner, lsp)[:, -1], lsp), flush=True)
        print(name, "coco_dev (aspect kept) PCK@0.2, hips moved by s torso lengths:",
              hips_moved(coco_pred[:len(kept)], kept, (-0.02, 0.0, 0.02, 0.03, 0.05)), flush=True)


if __name__ == "__main__":
    main()
