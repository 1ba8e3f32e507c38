"""``poseserve eval-pipeline``: the whole-photo pipeline (detector → every person → pose),
measured the way users of COCO-trained systems measure theirs.

It runs the shipped graphs through the same code as the service: ``models.detection``
(letterbox, decode, NMS, prominence order) with the detector manifest's thresholds, then
every person's crop (``models.transforms``, the manifest's margin) through the pose
model in one batch.

- LSP test (1000 photos, one annotated person each, others unannotated): how often a
  returned box matches the annotated person (IoU ≥ 0.5 with the box around the annotated
  joints), and the PCK@0.2 of that person next to the PCK with the true box.
- coco_dev (every person annotated, COCO-17): COCO keypoint AP with pycocotools'
  ``COCOeval`` over the 12 body joints LSP and COCO share (face points marked unlabelled
  in the ground truth), whole photos in; and person recall (a detection with box IoU ≥ 0.5);
  beside it the same AP with the annotated boxes given, the ceiling a better detector
  could reach with this pose model.
"""
from __future__ import annotations

import argparse
import copy
import io
import json
import sys
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.detection import SEEN_JOINT_SCORE, SHIPPED_MODEL_DIR, Detection, Detector, iou, person_score
from models.evaluate import Runner, lsp_joints, lsp_test_people, movenet_runner, onnx_runner
from models.keypoints import COCO_KEYPOINT_NAMES, LSP_TO_COCO, coco_indices
from models.manifest import DetectorManifest, load_manifest
from models.metrics import pck_summary
from models.transforms import person_box



def pose_all(runner: Runner, img: Image.Image, boxes: list[tuple[float, float, float, float]]
             ) -> tuple[np.ndarray, np.ndarray | None]:
    """Every box through the pose model in one batch: (N, K, 2) image pixels, (N, K) scores."""
    crops, regions = zip(*(runner.crop(img, b) for b in boxes))
    out = runner.outputs(runner.batch(list(crops)))
    kp = np.stack([r.to_image(out["keypoints"][i]) for i, r in enumerate(regions)])
    return kp, out.get("scores")


def box_iou(a: tuple[float, ...], b: tuple[float, ...]) -> float:
    """IoU of two (x, y, w, h) boxes, by the detector's own ``iou``."""
    def corners(box: tuple[float, ...]) -> np.ndarray:
        return np.array([box[0], box[1], box[0] + box[2], box[1] + box[3]], np.float64)

    return float(iou(corners(a), corners(b)[None])[0])


def evaluate_lsp(detector: Detector, runner: Runner, data: str | None, limit: int = 0) -> dict:
    test = lsp_test_people(data)[:limit or None]
    found, best_ious, matched_pred, true_pred, gts, valids = [], [], [], [], [], []
    for p in test:
        with Image.open(p.path) as im:
            img = im.convert("RGB")
        dets = detector(img)
        truth = person_box(p.joints, p.valid)
        ious = [box_iou(d.as_xywh(), truth) for d in dets]
        best = int(np.argmax(ious)) if ious else -1
        best_ious.append(max(ious, default=0.0))
        found.append(best >= 0 and ious[best] >= 0.5)
        boxes = [d.as_xywh() for d in dets] + [truth]  # the true box rides in the same batch
        kp = lsp_joints(runner.keypoints, pose_all(runner, img, boxes)[0])
        true_pred.append(kp[-1])
        # a missed person scores as if nothing had been predicted near them
        matched_pred.append(kp[best] if found[-1] else np.full_like(kp[-1], -1e6))
        gts.append(p.joints)
        valids.append(p.valid)
    gt, valid, hit = np.stack(gts), np.stack(valids), np.array(found)
    pck_true = pck_summary(np.stack(true_pred), gt, valid)[0]
    pck_pipeline = pck_summary(np.stack(matched_pred), gt, valid)[0]
    pck_found = pck_summary(np.stack(matched_pred)[hit], gt[hit], valid[hit])[0] if hit.any() else 0.0
    return {"photos": len(test), "person_found@iou0.5": round(float(hit.mean()), 4),
            "median_best_iou": round(float(np.median(best_ious)), 3),
            "pck@0.2_true_box": round(pck_true, 4), "pck@0.2_pipeline": round(pck_pipeline, 4),
            "pck@0.2_pipeline_found_only": round(pck_found, 4)}


def ground_truth(coco: dict, image_ids: set[int]) -> dict:
    """A copy of COCO ground truth restricted to ``image_ids``."""
    gt = copy.deepcopy(coco)
    gt["images"] = [im for im in gt["images"] if im["id"] in image_ids]
    gt["annotations"] = [a for a in gt["annotations"] if a["image_id"] in image_ids]
    return gt


def body_only_ground_truth(coco: dict, image_ids: set[int]) -> dict:
    """COCO ground truth with the 5 face points unlabelled and num_keypoints recounted."""
    body = set(LSP_TO_COCO.values())
    gt = ground_truth(coco, image_ids)
    for ann in gt["annotations"]:
        kp = ann["keypoints"]
        for j in range(len(COCO_KEYPOINT_NAMES)):
            if j not in body:
                kp[3 * j: 3 * j + 3] = [0, 0, 0]
        ann["num_keypoints"] = sum(1 for j in body if kp[3 * j + 2] > 0)
    return gt


def coco_array(names: tuple[str, ...], kp: np.ndarray) -> np.ndarray:
    """A model's (K, 2) keypoints as COCO-17 rows (x, y, v): v = 1 where the model has the
    joint, all zeros where it does not (a 14-joint model has no face points)."""
    out = np.zeros((len(COCO_KEYPOINT_NAMES), 3))
    for c, i in enumerate(coco_indices(names)):
        if i is not None:
            out[c] = (*kp[i], 1.0)
    return out


def coco_stats(gt_dataset: dict, results: list[dict]) -> list[float]:
    """pycocotools' ten keypoint numbers (AP, AP50, AP75, AP M, AP L, AR, …)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO()
    gt.dataset = gt_dataset
    with redirect_stdout(io.StringIO()):
        gt.createIndex()
        if not results:
            return [0.0] * 10
        ev = COCOeval(gt, gt.loadRes(copy.deepcopy(results)), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return [float(s) for s in ev.stats]


# Detector score thresholds over which whole-photo AP is measured: COCO AP ranks people by
# score, so boxes below the service's display threshold can only add recall to it.
SCORE_SWEEP = (0.05, 0.1, 0.2, 0.35, 0.5)
MAX_PEOPLE = 20  # people kept per photo, most prominent first (as ``max_persons`` in the service)


# The photo sets whole-photo AP is reported on (key in the results → which photos): all of
# coco_dev, and those kept at their true aspect (the dataset README's preferred set).
SUBSETS = {"coco_dev_all": lambda im: True, "coco_dev_aspect_kept": lambda im: im.get("aspect_kept") is not False}


def evaluate_coco(detector: Detector, runner: Runner, data: str | None) -> dict[str, dict]:
    """COCO keypoint AP on every ``SUBSETS`` photo set, at the detector manifest's threshold
    and at every ``SCORE_SWEEP`` threshold (``by_min_score``). Each photo is detected and
    posed once and its answers scored in every set that holds it. Detection runs once,
    uncapped, at the lowest threshold, and the pose model only on boxes some threshold
    keeps: the people kept at a higher threshold are exactly those a direct call would
    keep (NMS never lets a lower-scored box suppress a higher one), then the first
    ``MAX_PEOPLE``.

    ``true_boxes``: the same AP with every annotated person's own COCO box given instead
    of the detector's (each scored by its joints alone): what a perfect detector would
    leave, so the gap to it is the detector's share of what is lost."""
    from models.data import data_dir

    root = data_dir(data) / "coco_dev"
    coco = json.loads((root / "person_keypoints.json").read_text())
    default = detector.manifest.score_threshold
    thresholds = sorted({*SCORE_SWEEP, default})
    results: dict[float, list[dict]] = {t: [] for t in thresholds}
    given: list[dict] = []  # poses in the annotated people's own boxes
    recalled: dict[tuple[float, int], int] = {}  # (threshold, image id) → people found
    people: dict[int, int] = {}  # image id → annotated people
    for im in coco["images"]:
        with Image.open(root / "images" / im["file_name"]) as f:
            img = f.convert("RGB")
        found = detector(img, min_score=thresholds[0], max_people=sys.maxsize)  # uncapped: exact below
        truths = [a["bbox"] for a in coco["annotations"] if a["image_id"] == im["id"] and not a.get("iscrowd")]
        people[im["id"]] = len(truths)
        if truths:
            kp, scores = pose_all(runner, img, [tuple(b) for b in truths])
            given += [prediction(runner, im["id"], kp[i], person_score(None, None if scores is None else scores[i]))
                      for i in range(len(truths))]
        kept = {t: [d for d in found if d.score >= t][:MAX_PEOPLE] for t in thresholds}
        for t in thresholds:
            recalled[t, im["id"]] = sum(any(box_iou(d.as_xywh(), b) >= 0.5 for d in kept[t]) for b in truths)
        dets = list(dict.fromkeys(d for t in thresholds for d in kept[t]))  # only those some threshold keeps
        if not dets:
            continue
        row = {d: i for i, d in enumerate(dets)}
        kp, scores = pose_all(runner, img, [d.as_xywh() for d in dets])
        for t in thresholds:
            for d in kept[t]:
                i = row[d]
                confidence = person_score(d.score, None if scores is None else scores[i])
                results[t].append(prediction(runner, im["id"], kp[i], confidence))
    # All 17 joints (COCO's own protocol, comparable with published results): only for
    # models that predict the face points.
    has_face = all(n in runner.keypoints for n in COCO_KEYPOINT_NAMES)

    def measure(ids: set[int], predictions: list[dict], recall: float, body_gt: dict, full_gt: dict) -> dict:
        predictions = [p for p in predictions if p["image_id"] in ids]
        stats = coco_stats(body_gt, predictions)
        full = coco_stats(full_gt, predictions) if has_face else None
        return {"person_recall@iou0.5": round(recall, 4),
                "AP": round(stats[0], 4), "AP50": round(stats[1], 4), "AP75": round(stats[2], 4),
                "AP_medium": round(stats[3], 4), "AP_large": round(stats[4], 4), "AR": round(stats[5], 4),
                "AP_17": None if full is None else round(full[0], 4),
                "AP50_17": None if full is None else round(full[1], 4),
                "AR_17": None if full is None else round(full[5], 4)}

    out = {}
    for key, keep in SUBSETS.items():
        ids = {im["id"] for im in coco["images"] if keep(im)}
        body_gt, full_gt = body_only_ground_truth(coco, ids), ground_truth(coco, ids)
        total = sum(people[i] for i in ids)
        measured = {t: measure(ids, results[t], sum(recalled[t, i] for i in ids) / max(total, 1), body_gt, full_gt)
                    for t in thresholds}
        out[key] = {"photos": len(ids), "people": total, "min_person_score": default, **measured[default],
                    "by_min_score": {str(t): measured[t] for t in thresholds},
                    "true_boxes": measure(ids, given, 1.0 if total else 0.0, body_gt, full_gt)}
    return out


def prediction(runner: Runner, image_id: int, kp: np.ndarray, score: float) -> dict:
    """One person's answer as a COCO keypoint result."""
    return {"image_id": image_id, "category_id": 1, "score": round(score, 5),
            "keypoints": coco_array(runner.keypoints, kp).ravel().round(2).tolist()}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", default=["hourglass"], help="pose model ids in --model-dir")
    p.add_argument("--model-dir", type=Path, default=SHIPPED_MODEL_DIR)
    p.add_argument("--data", help="datasets folder (default: $POSE_DATA_DIR or ../shared/datasets)")
    p.add_argument("--limit", type=int, default=0, help="only the first N LSP test photos")
    p.add_argument("--out", type=Path, help="also write the results as JSON here")
    p.add_argument("--markdown", type=Path, help="also write a report here (docs/pipeline.md)")
    p.add_argument("--flip-test", action="store_true",
                   help="also each model with the test-time flip (the service's flip=true), as 'MODEL (flip)'")
    p.add_argument("--peer", action="store_true",
                   help="also MoveNet Lightning from ../shared/peers behind the same detector, as a yardstick")


def main(args: argparse.Namespace) -> None:
    missing = [m for m in args.models if not (args.model_dir / f"{m}.onnx").exists()]
    if missing:
        raise SystemExit(f"poseserve eval-pipeline: no model {', '.join(missing)} in {args.model_dir}")
    detector = Detector.load(args.model_dir)
    results = {}
    runners = {m: lambda m=m: onnx_runner(args.model_dir / f"{m}.onnx") for m in args.models}
    if args.flip_test:
        runners |= {f"{m} (flip)": lambda m=m: onnx_runner(args.model_dir / f"{m}.onnx", flip_test=True)
                    for m in args.models}
    if args.peer:
        runners["movenet-lightning (peer)"] = movenet_runner
    for model_id, make_runner in runners.items():
        runner = make_runner()
        results[model_id] = {"lsp_test": evaluate_lsp(detector, runner, args.data, args.limit),
                             **evaluate_coco(detector, runner, args.data)}
        print(json.dumps({model_id: results[model_id]}, indent=1), flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1) + "\n")
    if args.markdown:
        args.markdown.write_text(markdown(results, detector.manifest, args.limit))


def markdown(results: dict, detector: DetectorManifest, limit: int) -> str:
    lines = ["# The whole-photo pipeline: detector + pose", "",
             "Measured by `poseserve eval-pipeline` (models/evaluate_pipeline.py) in one run, through the",
             f"shipped graphs and the service's own decoding: detector `{detector.id}` ({detector.architecture}, "
             f"{detector.input['size']} px input),",
             f"score ≥ {detector.score_threshold}, NMS IoU {detector.iou_threshold}; every person's crop through the",
             "pose model in one batch" + ("; *(flip)*: each crop also mirrored and the two answers averaged, "
                                          "the service's `flip=true`." if any(m.endswith(" (flip)") for m in results)
                                          else "."), "",
             "## LSP test: is the annotated person found, and how well is their pose estimated?", "",
             f"{'First ' + str(limit) if limit else 'All 1000'} LSP test photos, whole photos in (no `bbox`). *Found* = a "
             "returned box with IoU ≥ 0.5 against the box around the annotated joints (a tight box: detector "
             "boxes also cover hands, feet and hair, so IoUs run lower than against a person box). PCK@0.2 "
             "of the matched person (a missed person counts as all joints wrong), next to the PCK with the "
             "true box.", "",
             "| model | found (IoU ≥ 0.5) | median best IoU | PCK@0.2 true box | PCK@0.2 pipeline | PCK@0.2 pipeline, found only |",
             "|---|---|---|---|---|---|"]
    for m, r in results.items():
        lsp = r["lsp_test"]
        lines.append(f"| {m} | {lsp['person_found@iou0.5']:.3f} | {lsp['median_best_iou']:.3f} | "
                     f"{lsp['pck@0.2_true_box']:.3f} | {lsp['pck@0.2_pipeline']:.3f} | "
                     f"{lsp['pck@0.2_pipeline_found_only']:.3f} |")
    lines += ["", "## coco_dev: COCO keypoint AP on everyday photos (pycocotools)", "",
              "Every person annotated (COCO-17); whole photos in. **AP (17)**: `COCOeval` over all 17 "
              "joints with COCO's sigmas, the number comparable with published COCO results (models that "
              "predict the face points; — for those that predict only the LSP joints). **AP (12)**: over the "
              "12 body joints LSP and COCO share (the 5 face points marked unlabelled in the ground truth, "
              "`num_keypoints` recounted), comparable across every model here. A prediction's score = "
              f"detector score × mean score of the joints scored above {SEEN_JOINT_SCORE} (heatmap models; "
              "`models.detection.person_score`). *Recall* = annotated people with a "
              "returned box of IoU ≥ 0.5. *all*: the 110 photos; *aspect kept*: the 57 not squashed on "
              "re-hosting.", "",
              "| model | photos | people | person recall | AP (17) | AP50 (17) | AP (12) | AP50 (12) | AP75 (12) | AP medium (12) | AP large (12) | AR (12) |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m, r in results.items():
        for key, label in (("coco_dev_all", "all"), ("coco_dev_aspect_kept", "aspect kept")):
            c = r[key]
            ap17 = "— | —" if c.get("AP_17") is None else f"**{c['AP_17']:.3f}** | {c['AP50_17']:.3f}"
            lines.append(f"| {m} ({label}) | {c['photos']} | {c['people']} | {c['person_recall@iou0.5']:.3f} | "
                         f"{ap17} | **{c['AP']:.3f}** | {c['AP50']:.3f} | {c['AP75']:.3f} | {c['AP_medium']:.3f} | "
                         f"{c['AP_large']:.3f} | {c['AR']:.3f} |")
    lines += ["", "## AP against the detector's score threshold (coco_dev)", "",
              f"The same photos and pose answers, keeping the boxes scored at least *min score* (at most "
              f"{MAX_PEOPLE} per photo, most prominent first; the service's `min_person_score`, default "
              f"{detector.score_threshold}). COCO AP ranks people by score, so the low-scored boxes a "
              "display would hide can only add recall to it: pass a low `min_person_score` when the answers "
              "feed COCO tooling.", "",
              "*true boxes*: every annotated person's own COCO box given instead of the detector's, each "
              "scored by its joints alone: a perfect detector's AP with the same pose model, so the gap "
              "between it and the rows above is what the detector costs.", "",
              "| model | photos | min score | person recall | AP (17) | AP (12) | AR (12) |",
              "|---|---|---|---|---|---|---|"]
    for key, label in (("coco_dev_all", "all"), ("coco_dev_aspect_kept", "aspect kept")):
        for m, r in results.items():
            rows = dict(r[key].get("by_min_score", {}))
            if "true_boxes" in r[key]:
                rows["true boxes"] = r[key]["true_boxes"]
            for t, c in rows.items():
                ap17 = "—" if c.get("AP_17") is None else f"{c['AP_17']:.3f}"
                lines.append(f"| {m} | {label} | {t} | {c['person_recall@iou0.5']:.3f} | {ap17} | {c['AP']:.3f} | "
                             f"{c['AR']:.3f} |")
    return "\n".join(lines) + "\n"
