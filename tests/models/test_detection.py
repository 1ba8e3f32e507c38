"""Person detection geometry (models/detection.py): hand-computed cases, and parity of the
vectorised decode + NMS with a plain loop-by-loop reference on the real detector's output."""
from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from models.detection import Detection, decode, grids, iou, letterbox, nms, people, person_score

SIZE = 416


def raw_head(entries: dict[int, tuple[float, ...]]) -> np.ndarray:
    """An all-background head (objectness 0) with the given anchors set."""
    raw = np.zeros((3549, 85), np.float32)
    for index, values in entries.items():
        raw[index, :len(values)] = values
    return raw


def test_grids_follow_the_head_order():
    cells, stride = grids(SIZE)
    assert cells.shape == (3549, 2) and stride.shape == (3549, 1)
    assert cells[0].tolist() == [0, 0] and cells[1].tolist() == [1, 0] and cells[52].tolist() == [0, 1]
    assert stride[2703, 0] == 8 and stride[2704, 0] == 16 and stride[2704 + 676, 0] == 32
    assert cells[2704 + 2 * 26 + 3].tolist() == [3, 2]


def test_decode_by_hand():
    # stride-16 cell (gx=3, gy=2): cx = (0.5 + 3) * 16 = 56, cy = (0.25 + 2) * 16 = 36,
    # w = e^ln2 * 16 = 32, h = e^0 * 16 = 16; score = 0.8 objectness × 0.5 person
    index = 2704 + 2 * 26 + 3
    boxes, scores = decode(raw_head({index: (0.5, 0.25, math.log(2), 0.0, 0.8, 0.5)}), SIZE)
    assert boxes[index] == pytest.approx([40, 28, 72, 44])
    assert scores[index] == pytest.approx(0.4)
    assert np.count_nonzero(scores) == 1
    with pytest.raises(ValueError, match="anchor points"):
        decode(np.zeros((100, 85), np.float32), SIZE)


def test_iou_and_nms_by_hand():
    a = np.array([0, 0, 10, 10], np.float32)
    assert iou(a, np.array([[5, 0, 15, 10], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)) == pytest.approx(
        [50 / 150, 0, 1])
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60], [5, 0, 15, 10]], np.float32)
    scores = np.array([0.6, 0.9, 0.5, 0.7], np.float32)
    # 1 (0.9) suppresses 0 (IoU 0.82); 3 (0.7) overlaps 1 by 6/14 = 0.43 ≤ 0.45: kept; 2 alone
    assert nms(boxes, scores, 0.45) == [1, 3, 2]
    assert nms(boxes, scores, 0.4) == [1, 2]


def test_people_are_in_image_pixels_clipped_and_most_prominent_first():
    ratio = 0.5  # letterbox pixels per image pixel: a 832-px-wide image
    small_sure = 2704 + 5 * 26 + 5  # stride 16, 16x16 box, score 0.9
    big_unsure = 2704 + 676 + 6 * 13 + 6  # stride 32, 128x128 box, score 0.5
    edge = 0  # stride 8 at the corner, partly outside the image
    raw = raw_head({small_sure: (0.5, 0.5, 0, 0, 0.9, 1.0), big_unsure: (0.5, 0.5, math.log(4), math.log(4), 0.5, 1.0),
                    edge: (0, 0, math.log(4), math.log(4), 0.8, 1.0), 7: (0.5, 0.5, 0, 0, 0.2, 1.0)})
    found = people(raw, SIZE, ratio, (832, 832), min_score=0.3, iou_threshold=0.45, max_people=10)
    assert [round(d.score, 2) for d in found] == [0.5, 0.9, 0.8]  # score × area order; 0.2 dropped
    assert found[0].as_xywh() == pytest.approx((208 / ratio - 128, 208 / ratio - 128, 256, 256))
    assert found[2].x == 0 and found[2].y == 0 and found[2].w == pytest.approx(16 / ratio)  # clipped
    assert len(people(raw, SIZE, ratio, (832, 832), 0.3, 0.45, max_people=1)) == 1


def test_person_score_ranks_by_the_joints_the_model_sees():
    # joints at 0.9 and 0.5 are seen, 0.1 and 0.05 are below 0.2: mean of the seen ones, 0.7
    assert person_score(0.8, [0.9, 0.5, 0.1, 0.05, None]) == pytest.approx(0.8 * 0.7)
    assert person_score(None, [0.6, 0.4]) == pytest.approx(0.5)  # a given box: no detector score
    assert person_score(0.8, [0.1, 0.15]) == 0.0  # nothing seen: ranked last
    assert person_score(0.8, None) == person_score(0.8, [None, None]) == pytest.approx(0.8)  # regressors


def test_letterbox_keeps_aspect_pads_grey_and_is_bgr():
    img = Image.new("RGB", (200, 100), (255, 0, 0))
    x, ratio = letterbox(img, SIZE)
    assert x.shape == (1, 3, SIZE, SIZE) and x.dtype == np.float32 and ratio == pytest.approx(2.08)
    assert x[0, :, 10, 10].tolist() == [0, 0, 255]  # BGR, raw 0-255
    assert (x[0, :, 300, 10] == 114).all()  # below the 208-px-high image: padding
    assert x[0, :, 10, 415].tolist() == [0, 0, 255]  # the image spans the full width


def reference_people(raw, size, ratio, image_size, min_score, iou_threshold):
    """The README's decoding, written plainly: loops, no vectorisation."""
    dets, index = [], 0
    for stride in (8, 16, 32):
        n = size // stride
        for gy in range(n):
            for gx in range(n):
                cx, cy, w, h, obj = raw[index, :5]
                score = obj * raw[index, 5]
                index += 1
                if score < min_score:
                    continue
                cx, cy = (cx + gx) * stride, (cy + gy) * stride
                w, h = math.exp(w) * stride, math.exp(h) * stride
                dets.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, score])
    dets.sort(key=lambda d: -d[4])
    kept = []
    for d in dets:
        if all(iou(np.array(d[:4]), np.array([k[:4]]))[0] <= iou_threshold for k in kept):
            kept.append(d)
    out = []
    for x1, y1, x2, y2, s in kept:
        x1, y1 = min(max(x1 / ratio, 0), image_size[0]), min(max(y1 / ratio, 0), image_size[1])
        x2, y2 = min(max(x2 / ratio, 0), image_size[0]), min(max(y2 / ratio, 0), image_size[1])
        out.append((x1, y1, x2 - x1, y2 - y1, s))
    return sorted(out, key=lambda d: -d[4] * d[2] * d[3])


def test_decode_matches_the_plain_reference_on_the_real_detector():
    from models.manifest import load_manifest
    from models.runtime import create_session
    from tests.helpers import SHIPPED

    session = create_session(SHIPPED / "person_detector.onnx", threads=1)
    size = int(load_manifest(SHIPPED / "person_detector.json").input["size"])
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (300, 500, 3), dtype=np.uint8))
    x, ratio = letterbox(img, size)
    raw = session.run(None, {"images": x})[0][0]
    # a low threshold so that the noise image yields candidates to decode and suppress
    ours = people(raw, size, ratio, img.size, min_score=1e-4, iou_threshold=0.45, max_people=1000)
    ref = reference_people(raw, size, ratio, img.size, 1e-4, 0.45)
    assert len(ours) == len(ref) > 0
    for d, r in zip(ours, ref):
        assert (d.x, d.y, d.w, d.h, d.score) == pytest.approx(r, rel=1e-4, abs=1e-3)
    assert isinstance(ours[0], Detection)
