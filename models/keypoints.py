"""The 14 LSP joints: names, skeleton, the left/right flip table, the COCO mapping, and
how a skeleton is drawn.

Written once and shared by data loading, augmentation, training, export (the manifest),
the report and, through the manifest and ``draw_skeleton``, the service. Torch-free.
"""
from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw

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

# COCO-17 (the everyday-photo evaluation set, coco_dev, and COCO keypoint AP).
COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
# The 12 body joints both sets share: LSP index → COCO index (LSP's neck and head_top
# have no COCO counterpart, COCO's face points none in LSP).
LSP_TO_COCO: dict[int, int] = {i: COCO_KEYPOINT_NAMES.index(n) for i, n in enumerate(KEYPOINT_NAMES)
                               if n in COCO_KEYPOINT_NAMES}


RIGHT_COLOUR, LEFT_COLOUR, CENTRE_COLOUR = (230, 60, 60), (60, 200, 90), (70, 140, 255)


def limb_colour(names: Sequence[str], a: int, b: int) -> tuple[int, int, int]:
    """Red for the person's right side, green for the left, blue for the middle."""
    both = names[a] + names[b]
    if "right" in both and "left" not in both:
        return RIGHT_COLOUR
    if "left" in both and "right" not in both:
        return LEFT_COLOUR
    return CENTRE_COLOUR


def draw_skeleton(img: Image.Image, xy: Sequence[Sequence[float]],
                  skeleton: Sequence[Sequence[int]] = SKELETON, names: Sequence[str] = KEYPOINT_NAMES,
                  width: int | None = None, colour: tuple[int, int, int] | None = None) -> Image.Image:
    """A copy of ``img`` with limbs and joints drawn; line width scales with the image.

    ``colour`` draws every limb in one colour (one colour per person in a group photo);
    otherwise limbs are coloured by side.
    """
    out = img.convert("RGB").copy()
    draw = ImageDraw.Draw(out)
    w = width or max(2, round(max(out.size) / 150))
    for a, b in skeleton:
        draw.line([tuple(xy[a]), tuple(xy[b])], fill=colour or limb_colour(names, a, b), width=w)
    r = w * 0.9
    for x, y in xy:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=(255, 255, 255), outline=(0, 0, 0))
    return out
