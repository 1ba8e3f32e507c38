"""Whole-photo COCO AP: the detector threshold sweep counts exactly the boxes each threshold
keeps, and each photo set is scored on its own photos from one pass."""
from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("pycocotools")

from models import evaluate_pipeline  # noqa: E402
from models.detection import Detection  # noqa: E402
from models.keypoints import COCO_KEYPOINT_NAMES, KEYPOINT_NAMES, coco_indices  # noqa: E402


def test_a_person_the_detector_scores_low_counts_only_at_thresholds_that_keep_it(tmp_path, monkeypatch):
    """Two people, poses exact; the detector is sure of one (0.9) and unsure of the other
    (0.15). At the default threshold (0.35) the second is missed: recall 0.5, AP about 0.5;
    at 0.1 and below both are found: recall 1, AP 1. A second, squashed photo (aspect not
    kept) holds a third person the detector misses: it lowers every "all" figure and none
    of the aspect-kept ones, and each photo goes through the detector once."""
    from PIL import Image

    root = tmp_path / "coco_dev"
    (root / "images").mkdir(parents=True)
    (tmp_path / "lsp").mkdir()
    (tmp_path / "lsp" / "joints.mat").touch()  # data_dir's marker of a datasets folder
    Image.new("RGB", (200, 100)).save(root / "images" / "1.jpg")
    Image.new("RGB", (120, 100)).save(root / "images" / "2.jpg")
    rng = np.random.default_rng(0)
    boxes = [(10.0, 10.0, 60.0, 80.0), (110.0, 5.0, 70.0, 90.0), (20.0, 10.0, 50.0, 85.0)]
    truths = [np.column_stack([rng.uniform(x, x + w, 17), rng.uniform(y, y + h, 17)]) for x, y, w, h in boxes]
    annotations = [{"id": i + 1, "image_id": 1 if i < 2 else 2, "category_id": 1, "iscrowd": 0, "bbox": list(b), "area": b[2] * b[3],
                    "num_keypoints": 17, "keypoints": np.column_stack([t, np.full(17, 2)]).ravel().tolist()}
                   for i, (b, t) in enumerate(zip(boxes, truths))]
    (root / "person_keypoints.json").write_text(json.dumps({
        "images": [{"id": 1, "file_name": "1.jpg", "width": 200, "height": 100},
                   {"id": 2, "file_name": "2.jpg", "width": 120, "height": 100, "aspect_kept": False}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "person", "keypoints": list(COCO_KEYPOINT_NAMES), "skeleton": []}]}))

    dets = [Detection(*boxes[0], score=0.9), Detection(*boxes[1], score=0.15)]
    calls = []

    class FakeDetector:  # the shipped detector's call: two fixed boxes in photo 1, none in photo 2
        manifest = SimpleNamespace(score_threshold=0.35)

        def __call__(self, img, min_score=None, max_people=10):
            calls.append(img.size)
            return [d for d in dets if d.score >= min_score][:max_people] if img.size == (200, 100) else []

    detector = FakeDetector()

    def exact_poses(runner, img, xywh):  # the true pose of whichever person each box is
        kp = np.zeros((len(xywh), len(KEYPOINT_NAMES), 2))
        for n, box in enumerate(xywh):
            truth = truths[boxes.index(tuple(box))]
            for c, i in enumerate(coco_indices(KEYPOINT_NAMES)):
                kp[n, i] = truth[c]
        return kp, None

    monkeypatch.setattr(evaluate_pipeline, "pose_all", exact_poses)
    runner = SimpleNamespace(keypoints=KEYPOINT_NAMES)
    results = evaluate_pipeline.evaluate_coco(detector, runner, str(tmp_path))
    assert sorted(calls) == [(120, 100), (200, 100)]  # one detection per photo for both sets
    result, everything = results["coco_dev_aspect_kept"], results["coco_dev_all"]
    assert (result["photos"], result["people"], everything["photos"], everything["people"]) == (1, 2, 2, 3)

    sweep = result["by_min_score"]
    assert sorted(map(float, sweep)) == sorted({*evaluate_pipeline.SCORE_SWEEP, 0.35})
    assert result["min_person_score"] == 0.35 and result["AP"] == sweep["0.35"]["AP"]
    for t in ("0.05", "0.1"):
        assert sweep[t]["person_recall@iou0.5"] == 1.0
        assert sweep[t]["AP"] == pytest.approx(1.0) and sweep[t]["AP_17"] == pytest.approx(1.0)
    for t in ("0.2", "0.35", "0.5"):
        assert sweep[t]["person_recall@iou0.5"] == 0.5
        assert 0.4 < sweep[t]["AP"] < 0.6
    # Given the annotated boxes, both people are posed (exactly): what a perfect detector leaves.
    assert result["true_boxes"]["AP"] == pytest.approx(1.0) and result["true_boxes"]["AP_17"] == pytest.approx(1.0)
    # All photos: the missed third person costs recall and AP at every threshold, not with true boxes.
    assert everything["by_min_score"]["0.1"]["person_recall@iou0.5"] == pytest.approx(2 / 3, abs=1e-4)
    assert everything["by_min_score"]["0.1"]["AP"] < 0.8 and everything["true_boxes"]["AP"] == pytest.approx(1.0)
    report = evaluate_pipeline.markdown(
        {"m": {"lsp_test": {"person_found@iou0.5": 1, "median_best_iou": 1, "pck@0.2_true_box": 1,
                            "pck@0.2_pipeline": 1, "pck@0.2_pipeline_found_only": 1},
               **results}},
        SimpleNamespace(id="d", architecture="a", score_threshold=0.35, iou_threshold=0.45, input={"size": 512}), 0)
    assert "| m | aspect kept | 0.1 | 1.000 |" in report and "| m | all | 0.1 | 0.667 |" in report
    assert "| m | all | true boxes | 1.000 | 1.000 | 1.000 |" in report
    assert "pose model in one batch.\n" in report and "(flip)" not in report  # no flipped rows, no legend for them


def test_flip_test_adds_each_model_again_through_the_mirrored_runner(tmp_path, monkeypatch):
    """``--flip-test`` measures every model twice in one run: as served by default and with
    the service's ``flip=true``; the second is built with the flip and reported as its own row."""
    import argparse

    (tmp_path / "m.onnx").touch()
    built = []
    monkeypatch.setattr(evaluate_pipeline.Detector, "load", staticmethod(lambda model_dir: "detector"))
    monkeypatch.setattr(evaluate_pipeline, "onnx_runner",
                        lambda path, flip_test=False: built.append((path.name, flip_test)) or flip_test)
    monkeypatch.setattr(evaluate_pipeline, "evaluate_lsp", lambda detector, runner, data, limit: {"flip": runner})
    monkeypatch.setattr(evaluate_pipeline, "evaluate_coco", lambda detector, runner, data: {})
    p = argparse.ArgumentParser()
    evaluate_pipeline.add_arguments(p)
    out = tmp_path / "r.json"
    evaluate_pipeline.main(p.parse_args(["--models", "m", "--model-dir", str(tmp_path), "--flip-test", "--out", str(out)]))
    assert built == [("m.onnx", False), ("m.onnx", True)]
    results = json.loads(out.read_text())
    assert results == {"m": {"lsp_test": {"flip": False}}, "m (flip)": {"lsp_test": {"flip": True}}}
