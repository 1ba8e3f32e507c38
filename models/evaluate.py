"""``poseserve eval``: PCK on the LSP test half and on everyday photos (coco_dev).

Each photo is read from disk at its original size, cropped around the person box with
the manifest's margin by ``models.transforms`` (as the service does with a ``bbox``),
run through the ONNX graph or the PyTorch checkpoint, and the keypoints mapped back to
image pixels, where PCK is measured. So the number measures exactly what
``POST /pose?bbox=…`` returns.

- LSP: the 1000 test photos, box = the tight box around the annotated joints.
- coco_dev: every person with both torso joints labelled in the photos kept at their
  original aspect ratio, box = COCO's person box; PCK over the 12 joints LSP and COCO
  share (``LSP_TO_COCO``), torso = left shoulder to right hip as on LSP.
"""
from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.data import LSP_TEST, data_dir, load_lsp
from models.flip import merge_mirrored, with_mirrors
from models.heatmap_codec import REFINEMENTS
from models.keypoints import COCO_KEYPOINT_NAMES, LSP_KEYPOINT_NAMES, LSP_TO_COCO, NUM_LSP_KEYPOINTS, TORSO, JointSet, joint_indices
from models.manifest import PoseManifest, load_manifest
from models.metrics import pck, pck_summary
from models.runtime import create_session
from models.transforms import CropBox, crop_square, normalise, person_box

THRESHOLDS = tuple(round(0.01 * i, 2) for i in range(0, 51))
# What a manifest's "accuracy" keeps of an evaluation (the curves stay in docs/results/).
ACCURACY_KEYS = ("dataset", "pck@0.2", "pck@0.1", "per_joint_pck@0.2", "per_stage_pck@0.2")


@dataclass
class Runner:
    """A model as evaluation sees it: normalised NCHW batch → (N, T, K, 2) stage keypoints."""

    run: Callable[[np.ndarray], np.ndarray]
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_margin: float
    outputs: Callable[[np.ndarray], dict[str, np.ndarray]] | None = None  # every named output (ONNX)
    keypoints: tuple[str, ...] = LSP_KEYPOINT_NAMES  # the joints the model predicts, in its order

    def crop(self, img: Image.Image, box: tuple[float, float, float, float]) -> tuple[np.ndarray, CropBox]:
        """The crop the service would feed for person ``box`` (x, y, w, h), and where it lies."""
        region = CropBox.around(*box, self.crop_margin)
        return crop_square(img, region, self.size), region

    def batch(self, crops: list[np.ndarray]) -> np.ndarray:
        """uint8 crops → the normalised NCHW input this model expects."""
        return normalise(np.stack(crops), self.mean, self.std)


@dataclass
class Person:
    """One evaluated person: photo, box (x, y, w, h), LSP-order joints (14, 2) and mask;
    ``split``: where the photo comes from (coco_dev: COCO's val2017 or train2017)."""

    path: str
    box: tuple[float, float, float, float]
    joints: np.ndarray
    valid: np.ndarray
    split: str = ""


PEERS_DIR = Path(os.environ.get("POSE_PEERS_DIR", Path(__file__).resolve().parents[2] / "shared" / "peers"))


def movenet_runner(path: Path | None = None) -> Runner:
    """MoveNet SinglePose Lightning (``../shared/peers``), a yardstick measured through the
    very same crops and PCK as our models: a uint8 192×192 RGB square in, COCO-17
    (y, x, score) out, batch fixed at 1. Never served or shipped."""
    from models.runtime import create_session

    path = path or PEERS_DIR / "movenet_lightning.onnx"
    if not path.exists():
        raise FileNotFoundError(f"no MoveNet peer at {path} (set POSE_PEERS_DIR)")
    session = create_session(path, threads=1)
    name = session.get_inputs()[0].name

    def outputs(batch: np.ndarray) -> dict[str, np.ndarray]:
        pixels = np.clip(np.round(batch.transpose(0, 2, 3, 1)), 0, 255).astype(np.uint8)
        yxs = np.concatenate([session.run(None, {name: p[None]})[0][0, 0] for p in pixels])
        yxs = yxs.reshape(len(pixels), -1, 3)
        return {"keypoints": yxs[..., 1::-1], "scores": yxs[..., 2]}

    return Runner(lambda batch: outputs(batch)["keypoints"][:, None], 192, (0.0, 0.0, 0.0),
                  (1 / 255, 1 / 255, 1 / 255), 1.25, outputs, COCO_KEYPOINT_NAMES)


def lsp_joints(names: tuple[str, ...], stage_kp: np.ndarray) -> np.ndarray:
    """(..., K, 2) keypoints of a model with joints ``names`` → the 14 LSP joints (..., 14, 2);
    a joint the model lacks (MoveNet's neck) lands far away and never counts as a hit."""
    out = np.full((*stage_kp.shape[:-2], NUM_LSP_KEYPOINTS, 2), -1e6)
    for i, j in enumerate(joint_indices(names, LSP_KEYPOINT_NAMES)):
        if j is not None:
            out[..., i, :] = stage_kp[..., j, :]
    return out


def accuracy_summary(lsp: dict, coco: dict | None = None) -> dict:
    """The part of the evaluations that goes into the model's manifest (LSP, + coco_dev)."""
    summary = {k: lsp[k] for k in ACCURACY_KEYS}
    if coco is not None:
        summary["coco_dev"] = {k: coco[k] for k in ("dataset", "pck@0.2", "pck@0.1", "per_stage_pck@0.2")}
    return summary


def onnx_runner(path: Path, flip_test: bool = False) -> Runner:
    """An exported graph; ``flip_test``: averaged with the mirrored crops as the service
    does for ``flip=true`` (``models.flip``), unless the graph already has it inside."""
    manifest = load_manifest(path.with_suffix(".json"))
    assert isinstance(manifest, PoseManifest), f"{path} is not a pose model"
    session = create_session(path)
    names = [o.name for o in session.get_outputs()]
    mirror = flip_test and not manifest.flip_test

    def outputs(batch: np.ndarray) -> dict[str, np.ndarray]:
        result = dict(zip(names, session.run(None, {"image": with_mirrors(batch) if mirror else batch})))
        decoding = manifest.heatmap_decoding
        return (merge_mirrored(result, manifest.flip_permutation, manifest.output_kind, decoding.refine, decoding.sigma)
                if mirror else result)

    spec = manifest.input
    return Runner(lambda batch: outputs(batch)["stage_keypoints"], spec.size, spec.mean, spec.std,
                  spec.crop_margin, outputs, tuple(manifest.keypoints))


def torch_runner(path: Path, flip_test: bool = False, refine: str = "dark") -> Runner:
    import torch

    from models.checkpoint import load_checkpoint, num_keypoints, target_sigma
    from models.inference import InferenceGraph
    from models.transforms import CROP_MARGIN

    ckpt = load_checkpoint(path)
    graph = InferenceGraph(ckpt.model, flip_test=flip_test, refine=refine, sigma=target_sigma(ckpt)).eval()

    def run(batch: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return graph(torch.from_numpy(batch))[1].numpy()

    return Runner(run, ckpt.input_size, ckpt.mean, ckpt.std, CROP_MARGIN,
                  keypoints=JointSet(num_keypoints(ckpt)).names)


def lsp_test_people(data: str | None = None) -> list[Person]:
    lsp = NUM_LSP_KEYPOINTS
    return [Person(s.path, person_box(s.joints[:lsp], s.valid[:lsp]), s.joints[:lsp], s.valid[:lsp])
            for s in (load_lsp(data_dir(data))[i] for i in LSP_TEST)]


def coco_dev_people(data: str | None = None, squashed: bool = False) -> list[Person]:
    """coco_dev people in LSP joint order (neck and head_top unlabelled), torso labelled: of
    the photos kept at their true aspect, or with ``squashed`` of the others (stored resized
    to a square, people squashed or stretched)."""
    root = data_dir(data) / "coco_dev"
    coco = json.loads((root / "person_keypoints.json").read_text())
    images = {im["id"]: im for im in coco["images"]}
    people = []
    for ann in coco["annotations"]:
        im = images[ann["image_id"]]
        if ann.get("iscrowd") or (im.get("aspect_kept") is False) != squashed:
            continue
        kp = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        joints, valid = np.zeros((NUM_LSP_KEYPOINTS, 2)), np.zeros(NUM_LSP_KEYPOINTS, bool)
        for lsp, c in LSP_TO_COCO.items():
            joints[lsp], valid[lsp] = kp[c, :2], kp[c, 2] > 0
        if valid[list(TORSO)].all():
            people.append(Person(str(root / "images" / im["file_name"]), tuple(ann["bbox"]), joints, valid,
                                 im.get("coco_split", "")))
    return people


def predict(runner: Runner, people: list[Person], batch: int = 50) -> np.ndarray:
    """(N, T, 14, 2) stage keypoints in image pixels, through the serving crop: the LSP
    joints (PCK is measured on them)."""
    preds = []
    for start in range(0, len(people), batch):
        crops, boxes = [], []
        for p in people[start:start + batch]:
            with Image.open(p.path) as img:
                crop, box = runner.crop(img.convert("RGB"), p.box)
            crops.append(crop)
            boxes.append(box)
        stage_kp = lsp_joints(runner.keypoints, runner.run(runner.batch(crops)))
        preds.append(np.stack([[box.to_image(stage_kp[i, t]) for t in range(stage_kp.shape[1])]
                               for i, box in enumerate(boxes)]))
    return np.concatenate(preds)


def score(model_id: str, source: str, dataset: str, pred: np.ndarray, people: list[Person]) -> dict:
    gt, valid = np.stack([p.joints for p in people]), np.stack([p.valid for p in people])
    final = pred[:, -1]
    body = np.isin(np.arange(valid.shape[1]), list(LSP_TO_COCO))
    mean20, per_joint = pck_summary(final, gt, valid, 0.2)
    curve = []
    for a in THRESHOLDS:
        hits, counted = pck(final, gt, valid, a)
        curve.append(round(float(hits.sum() / max(counted.sum(), 1)), 4))
    labelled = valid.any(0)
    return {
        "model": model_id, "source": source, "dataset": dataset,
        "pck@0.2": round(mean20, 4),
        "pck@0.1": round(pck_summary(final, gt, valid, 0.1)[0], 4),
        # the 12 body joints LSP and COCO share: comparable with COCO-trained peers (no neck, head top)
        "pck@0.2_body12": round(pck_summary(final, gt, valid & body, 0.2)[0], 4),
        "per_joint_pck@0.2": {n: round(float(v), 4) for n, v, m in zip(LSP_KEYPOINT_NAMES, per_joint, labelled) if m},
        "per_stage_pck@0.2": [round(pck_summary(pred[:, t], gt, valid, 0.2)[0], 4)
                              for t in range(pred.shape[1])],
        "pck_curve": {"thresholds": list(THRESHOLDS), "pck": curve},
    }


def runner_for(onnx_path: Path | None, checkpoint: Path | None, flip_test: bool = False,
               refine: str = "dark") -> Runner:
    """An exported graph (its decoding is baked in), or a checkpoint with this decoding;
    either one with the test-time flip."""
    return onnx_runner(Path(onnx_path), flip_test) if onnx_path else torch_runner(Path(checkpoint), flip_test, refine)


def evaluate(model_id: str, data: str | None = None, onnx_path: Path | None = None,
             checkpoint: Path | None = None, limit: int = 0, runner: Runner | None = None) -> dict:
    """PCK on the LSP test half (the first ``limit`` photos when given)."""
    runner = runner or runner_for(onnx_path, checkpoint)
    people = lsp_test_people(data)[:limit or None]
    return score(model_id, str(onnx_path or checkpoint), f"LSP test im1001-im{1000 + len(people)} "
                 f"({len(people)} images, ground-truth person box, original resolution)",
                 predict(runner, people), people)


def evaluate_coco(model_id: str, data: str | None = None, onnx_path: Path | None = None,
                  checkpoint: Path | None = None, runner: Runner | None = None, squashed: bool = False) -> dict:
    """PCK over the 12 shared joints on coco_dev's people (everyday photos): those of the
    photos kept at their true aspect, or with ``squashed`` of the photos stored squashed."""
    runner = runner or runner_for(onnx_path, checkpoint)
    people = coco_dev_people(data, squashed)
    pred = predict(runner, people)
    kind = "stored squashed to a square" if squashed else "kept at original aspect ratio"
    result = score(model_id, str(onnx_path or checkpoint),
                   f"coco_dev: {len(people)} people with labelled torso in the {len({p.path for p in people})} "
                   f"photos {kind}, COCO person box, 12 joints shared with LSP",
                   pred, people)
    # COCO-trained peers (MoveNet: train2017) have seen the train2017 photos: report both.
    result["pck@0.2_by_split"] = {}
    for split in sorted({p.split for p in people if p.split}):
        rows = [i for i, p in enumerate(people) if p.split == split]
        gt, valid = np.stack([people[i].joints for i in rows]), np.stack([people[i].valid for i in rows])
        result["pck@0.2_by_split"][split] = round(pck_summary(pred[rows, -1], gt, valid, 0.2)[0], 4)
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    from models.architectures import ARCHITECTURES

    p.add_argument("--model", choices=sorted(ARCHITECTURES), help="the architecture (not with --peer)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--onnx", type=Path, help="an exported model (what the service runs)")
    src.add_argument("--checkpoint", type=Path, help="a PyTorch training checkpoint")
    src.add_argument("--peer", choices=("movenet",),
                     help="a peer from ../shared/peers (POSE_PEERS_DIR), through the same crops and PCK")
    p.add_argument("--data", help="datasets folder (default: $POSE_DATA_DIR or ../shared/datasets)")
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N LSP test images")
    p.add_argument("--coco", action="store_true", help="also PCK on coco_dev's everyday photos")
    p.add_argument("--flip-test", action="store_true", help="average with the mirrored crop (test-time flip)")
    p.add_argument("--refine", choices=REFINEMENTS, default="dark",
                   help="checkpoints: the heatmap decoding (an ONNX graph has its own inside)")
    p.add_argument("--crop-margin", type=float, help="override the crop margin around the person box")


def main(args: argparse.Namespace) -> None:
    """Prints the result; ``poseserve release`` is what records it in a manifest."""
    if args.peer:
        runner, args.model = movenet_runner(), "movenet-lightning"
    elif not args.model:
        raise SystemExit("poseserve eval: --model is required with --onnx or --checkpoint")
    else:
        runner = runner_for(args.onnx, args.checkpoint, args.flip_test, args.refine)
    if args.crop_margin:
        runner.crop_margin = args.crop_margin
    result = {"lsp": evaluate(args.model, args.data, args.onnx, args.checkpoint, args.limit, runner)}
    if args.coco:
        result["coco_dev"] = evaluate_coco(args.model, args.data, args.onnx, args.checkpoint, runner)
    for r in result.values():
        r.pop("pck_curve")
    print(json.dumps(result, indent=2))
