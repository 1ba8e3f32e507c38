"""The joint set LSP-14 ∪ COCO-17: one table, its orders, and growing a model into it."""
from __future__ import annotations

import numpy as np
import pytest

from models.keypoints import (COCO_KEYPOINT_NAMES, COCO_ORDER, COCO_SKELETON, FLIP_PERMUTATION,
                              KEYPOINT_NAMES, LSP_KEYPOINT_NAMES, LSP_TO_COCO, NUM_KEYPOINTS, SKELETON,
                              JointSet)


def test_the_19_joints_are_lsp_first_then_the_coco_face():
    assert NUM_KEYPOINTS == 19 and KEYPOINT_NAMES[:14] == LSP_KEYPOINT_NAMES
    assert set(KEYPOINT_NAMES) == set(LSP_KEYPOINT_NAMES) | set(COCO_KEYPOINT_NAMES)
    # the released 14 keep their ids: 0 is the right ankle, 13 the head top
    assert KEYPOINT_NAMES[0] == "right_ankle" and KEYPOINT_NAMES[13] == "head_top"


def test_coco_order_reads_a_coco_17_array_out_of_the_19():
    xy = np.arange(NUM_KEYPOINTS * 2, dtype=float).reshape(NUM_KEYPOINTS, 2)
    coco = xy[list(COCO_ORDER)]
    for c, name in enumerate(COCO_KEYPOINT_NAMES):
        assert np.array_equal(coco[c], xy[KEYPOINT_NAMES.index(name)])
    assert len(LSP_TO_COCO) == 12 and all(COCO_ORDER[c] == lsp for lsp, c in LSP_TO_COCO.items())


def test_flip_pairs_cover_the_face():
    perm = FLIP_PERMUTATION
    name = KEYPOINT_NAMES.index
    assert perm[name("left_eye")] == name("right_eye") and perm[name("right_ear")] == name("left_ear")
    assert perm[name("nose")] == name("nose") and perm[name("neck")] == name("neck")


def test_both_skeletons_join_named_joints_and_coco_s_is_the_dataset_s():
    assert all(max(e) < NUM_KEYPOINTS for e in SKELETON)
    assert {KEYPOINT_NAMES[a] for e in SKELETON for a in e} == set(KEYPOINT_NAMES)
    # the COCO dataset's own skeleton (categories[0], 1-based), as published
    published = [[16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8],
                 [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]
    assert {frozenset((a - 1, b - 1)) for a, b in published} == {frozenset(e) for e in COCO_SKELETON}


def test_a_14_joint_model_s_tables_are_the_prefix():
    lsp = JointSet(14)
    assert lsp.names == LSP_KEYPOINT_NAMES and not lsp.has_coco and JointSet(19).has_coco
    assert all(max(e) < 14 for e in lsp.skeleton) and len(lsp.skeleton) == 15
    assert sorted(lsp.flip_permutation) == list(range(14))
    with pytest.raises(ValueError):
        JointSet(17)
