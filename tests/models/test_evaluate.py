"""Evaluation: joints matched by name across joint sets, and the MoveNet peer through our crops."""
from __future__ import annotations

import numpy as np
import pytest

from models.evaluate import PEERS_DIR, lsp_joints
from models.keypoints import COCO_KEYPOINT_NAMES, KEYPOINT_NAMES, LSP_KEYPOINT_NAMES
from tests.helpers import DATA


def test_lsp_joints_are_taken_by_name_and_a_missing_one_never_hits():
    coco = np.arange(17 * 2, dtype=float).reshape(1, 17, 2)
    lsp = lsp_joints(COCO_KEYPOINT_NAMES, coco)
    assert lsp.shape == (1, 14, 2)
    right_ankle = COCO_KEYPOINT_NAMES.index("right_ankle")
    assert tuple(lsp[0, 0]) == tuple(coco[0, right_ankle])
    assert (lsp[0, LSP_KEYPOINT_NAMES.index("neck")] < -1e5).all()
    ours = np.random.default_rng(0).random((2, 3, 19, 2))
    assert np.array_equal(lsp_joints(KEYPOINT_NAMES, ours), ours[..., :14, :])


@pytest.mark.skipif(not (PEERS_DIR / "movenet_lightning.onnx").exists() or not (DATA / "coco_dev").exists(),
                    reason="../shared peers / coco_dev not present")
def test_the_movenet_peer_scores_as_its_readme_says_through_our_crops():
    """The peer's README measured PCK@0.2 0.661 on coco_dev with this protocol; ours must
    agree (same crops, same joints), or the yardstick is read wrongly (e.g. x and y swapped)."""
    from models.evaluate import evaluate_coco, movenet_runner

    result = evaluate_coco("movenet", data=str(DATA), runner=movenet_runner())
    assert result["pck@0.2"] == pytest.approx(0.661, abs=0.02)
    assert result["pck@0.2_body12"] == result["pck@0.2"]  # coco_dev labels only the 12 body joints


@pytest.mark.skipif(not (DATA / "coco_dev").exists(), reason="../shared coco_dev not present")
def test_coco_dev_people_come_from_the_kept_or_the_squashed_photos_never_both():
    import json

    from models.evaluate import coco_dev_people

    images = json.loads((DATA / "coco_dev" / "person_keypoints.json").read_text())["images"]
    squashed_files = {im["file_name"] for im in images if im.get("aspect_kept") is False}
    kept, squashed = coco_dev_people(str(DATA)), coco_dev_people(str(DATA), squashed=True)
    name = lambda p: p.path.rsplit("/", 1)[-1]  # noqa: E731
    assert kept and squashed
    assert not any(name(p) in squashed_files for p in kept)
    assert all(name(p) in squashed_files for p in squashed)
