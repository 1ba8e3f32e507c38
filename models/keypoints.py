"""The 14 LSP joints: names, skeleton and the left/right flip table.

Written once and shared by data loading, augmentation, training, export (the manifest)
and, through the manifest, the service.
"""
from __future__ import annotations

KEYPOINT_NAMES: tuple[str, ...] = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
    "left_wrist", "neck", "head_top",
)
NUM_KEYPOINTS = len(KEYPOINT_NAMES)

# Limbs drawn between joints (indices into KEYPOINT_NAMES).
SKELETON: tuple[tuple[int, int], ...] = (
    (0, 1), (1, 2), (5, 4), (4, 3), (2, 3),          # legs and pelvis
    (6, 7), (7, 8), (11, 10), (10, 9), (8, 9),       # arms and shoulders
    (8, 2), (9, 3), (12, 13), (8, 12), (9, 12),      # torso, neck, head
)

# FLIP_PERMUTATION[i] is the joint that joint i becomes in a horizontally mirrored image:
# the person's right side turns into their left side.
FLIP_PERMUTATION: tuple[int, ...] = (5, 4, 3, 2, 1, 0, 11, 10, 9, 8, 7, 6, 12, 13)

# PCK's reference length ("torso diameter" in the LSP literature): left shoulder to right hip.
TORSO = (KEYPOINT_NAMES.index("left_shoulder"), KEYPOINT_NAMES.index("right_hip"))
