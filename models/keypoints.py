"""The joint table: LSP-14 ∪ COCO-17 (19 named joints), the skeleton, the left/right flip
table, the COCO and LSP orders, and how a skeleton is drawn.

Written once and shared by data loading, augmentation, training, export (the manifest),
the report and, through the manifest and ``draw_skeleton``, the service. Torch-free.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image, ImageDraw

# The joint set every model predicts: LSP-14 first (ids 0-13 keep the meaning they have
# had since the first release: right_ankle ... head_top), then the five COCO face points.
# Together they are LSP-14 ∪ COCO-17: COCO's 12 body joints are LSP's, LSP adds neck and
# head_top, COCO adds the face. A dataset labels the joints it has; the rest are masked.
LSP_KEYPOINT_NAMES: tuple[str, ...] = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
    "left_wrist", "neck", "head_top",
)
FACE_KEYPOINT_NAMES: tuple[str, ...] = ("nose", "left_eye", "right_eye", "left_ear", "right_ear")
KEYPOINT_NAMES: tuple[str, ...] = LSP_KEYPOINT_NAMES + FACE_KEYPOINT_NAMES
NUM_KEYPOINTS = len(KEYPOINT_NAMES)          # 19: what a model trained on both sets predicts
NUM_LSP_KEYPOINTS = len(LSP_KEYPOINT_NAMES)  # 14: the models released before the face points

# COCO-17, in COCO's order (pycocotools, COCO tooling, coco_train, coco_dev).
COCO_KEYPOINT_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip",
    "left_knee", "right_knee", "left_ankle", "right_ankle",
)
# COCO_ORDER[c] = the joint id of COCO keypoint c: ``keypoints[COCO_ORDER]`` is a COCO-17 array.
COCO_ORDER: tuple[int, ...] = tuple(KEYPOINT_NAMES.index(n) for n in COCO_KEYPOINT_NAMES)
# The 12 body joints both sets share: LSP index → COCO index (LSP's neck and head_top
# have no COCO counterpart, COCO's face points none in LSP).
LSP_TO_COCO: dict[int, int] = {i: COCO_KEYPOINT_NAMES.index(n) for i, n in enumerate(LSP_KEYPOINT_NAMES)
                               if n in COCO_KEYPOINT_NAMES}


def joint_indices(names: Sequence[str], wanted: Sequence[str]) -> list[int | None]:
    """For each joint of ``wanted``, its index in a model's ``names`` (None: the model lacks it)."""
    return [list(names).index(n) if n in names else None for n in wanted]


def coco_indices(names: Sequence[str]) -> list[int | None]:
    """For each COCO-17 joint, its index in a model's ``names`` (None: the model lacks it)."""
    return joint_indices(names, COCO_KEYPOINT_NAMES)


def _by_name(pairs: Sequence[tuple[str, str]]) -> tuple[tuple[int, int], ...]:
    return tuple((KEYPOINT_NAMES.index(a), KEYPOINT_NAMES.index(b)) for a, b in pairs)


# Limbs drawn between joints: LSP's figure (legs, arms, torso, neck and head), then COCO's
# face (nose to eyes, eyes to ears). Edges between the first 14 joints come first, so an
# LSP-14 model draws ``skeleton(14)``.
SKELETON: tuple[tuple[int, int], ...] = _by_name((
    ("right_ankle", "right_knee"), ("right_knee", "right_hip"), ("left_ankle", "left_knee"),
    ("left_knee", "left_hip"), ("right_hip", "left_hip"),
    ("right_wrist", "right_elbow"), ("right_elbow", "right_shoulder"), ("left_wrist", "left_elbow"),
    ("left_elbow", "left_shoulder"), ("right_shoulder", "left_shoulder"),
    ("right_shoulder", "right_hip"), ("left_shoulder", "left_hip"), ("neck", "head_top"),
    ("right_shoulder", "neck"), ("left_shoulder", "neck"),
    ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"), ("right_eye", "right_ear"),
))
# COCO's own skeleton (the dataset's ``categories[0].skeleton``, 0-based, COCO order).
COCO_SKELETON: tuple[tuple[int, int], ...] = tuple(
    (COCO_KEYPOINT_NAMES.index(a), COCO_KEYPOINT_NAMES.index(b)) for a, b in (
        ("left_ankle", "left_knee"), ("left_knee", "left_hip"), ("right_ankle", "right_knee"),
        ("right_knee", "right_hip"), ("left_hip", "right_hip"), ("left_shoulder", "left_hip"),
        ("right_shoulder", "right_hip"), ("left_shoulder", "right_shoulder"),
        ("left_shoulder", "left_elbow"), ("right_shoulder", "right_elbow"),
        ("left_elbow", "left_wrist"), ("right_elbow", "right_wrist"), ("left_eye", "right_eye"),
        ("nose", "left_eye"), ("nose", "right_eye"), ("left_eye", "left_ear"),
        ("right_eye", "right_ear"), ("left_ear", "left_shoulder"), ("right_ear", "right_shoulder")))


def _mirror(name: str) -> str:
    if name.startswith("left_"):
        return "right_" + name[5:]
    if name.startswith("right_"):
        return "left_" + name[6:]
    return name


# FLIP_PERMUTATION[i] is the joint that joint i becomes in a horizontally mirrored image:
# the person's right side turns into their left side (derived from the names).
FLIP_PERMUTATION: tuple[int, ...] = tuple(KEYPOINT_NAMES.index(_mirror(n)) for n in KEYPOINT_NAMES)

# PCK's reference length ("torso diameter" in the LSP literature): left shoulder to right hip.
TORSO = (KEYPOINT_NAMES.index("left_shoulder"), KEYPOINT_NAMES.index("right_hip"))
# The two halves a half-body crop frames (augmentation: people cut off by the photo's edge
# or by other things, as detector boxes often find them): hips and legs, and the rest.
LOWER_BODY: tuple[int, ...] = tuple(KEYPOINT_NAMES.index(n) for n in (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle"))
UPPER_BODY: tuple[int, ...] = tuple(i for i in range(NUM_KEYPOINTS) if i not in LOWER_BODY)


@dataclass(frozen=True)
class JointSet:
    """The joints a model with ``k`` outputs predicts: names, skeleton and flip table.

    Models predict a prefix of ``KEYPOINT_NAMES``: 19 (LSP-14 ∪ COCO-17) or the first 14
    (models trained before the face points). Every table is that prefix of the full one.
    """

    k: int

    def __post_init__(self) -> None:
        if self.k not in (NUM_LSP_KEYPOINTS, NUM_KEYPOINTS):
            raise ValueError(f"a model predicts {NUM_LSP_KEYPOINTS} or {NUM_KEYPOINTS} joints, not {self.k}")

    @property
    def names(self) -> tuple[str, ...]:
        return KEYPOINT_NAMES[:self.k]

    @property
    def skeleton(self) -> tuple[tuple[int, int], ...]:
        return tuple(e for e in SKELETON if max(e) < self.k)

    @property
    def flip_permutation(self) -> tuple[int, ...]:
        return FLIP_PERMUTATION[:self.k]

    @property
    def has_coco(self) -> bool:
        """Whether every COCO-17 joint is predicted (else only the 12 body joints)."""
        return self.k == NUM_KEYPOINTS


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
