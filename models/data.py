"""LSP / LSPET / coco_train loading, the decoded-crop cache, and batch augmentation on tensors.

Every sample carries the 19 joints of ``models.keypoints`` (LSP-14 ∪ COCO-17) with a mask
of the ones its dataset labels: LSP/LSPET lack the face points, COCO lacks neck and
head_top. The loss masks the rest, so one model learns both sets.

Framing: the service crops 1.25 × the long side of a *detector's* person box, so the
training crops are framed the same way (a model trained on joint-box crops lost 12
points when scored on person-box crops). coco_train has COCO's person box; LSP and LSPET
have none, so the shipped detector is run on them once, and the detection that covers
the annotated joints best is the sample's box (the joint box grown 10 % where none does).

Why a cache: on a 2-core machine JPEG decoding would eat the training budget, so every
photo is decoded once into a square person crop with extra context (``CACHE_MARGIN``)
and stored as one compact ``.npz``. Augmentation (scale, rotation, flip with the
left/right swap, colour jitter) then runs on whole batches with ``affine_grid`` /
``grid_sample``, which costs little next to the forward pass.

The crops are made by ``models.transforms.crop_square``, the function the service uses.
"""
from __future__ import annotations

import argparse
import json
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.keypoints import (COCO_KEYPOINT_NAMES, COCO_ORDER, FLIP_PERMUTATION, KEYPOINT_NAMES, LOWER_BODY,
                              NUM_KEYPOINTS, NUM_LSP_KEYPOINTS, UPPER_BODY)
from models.transforms import CROP_MARGIN, PAD_RGB, CropBox, crop_square, person_box

# The cache keeps more context than that, so scale/rotation augmentation has real pixels.
CACHE_MARGIN = 1.75
LSP_TRAIN = range(0, 1000)      # im0001-im1000
LSP_TEST = range(1000, 2000)    # im1001-im2000, never trained on


COCO_VAL_PHOTOS = 150           # coco_train photos held out for per-epoch monitoring


@dataclass(frozen=True)
class Sample:
    """One annotated person: joints (19, 2) in image pixels, valid (19,) = labelled, and the
    person box (x, y, w, h) the crop is framed on (None: not known yet)."""

    path: str
    joints: np.ndarray
    valid: np.ndarray
    box: tuple[float, float, float, float] | None = None


def _all_joints(joints: np.ndarray, valid: np.ndarray, order: list[int] | tuple[int, ...]
                ) -> tuple[np.ndarray, np.ndarray]:
    """A dataset's joints (J, 2) and mask (J,) placed at joint ids ``order`` of the 19."""
    full, mask = np.zeros((NUM_KEYPOINTS, 2)), np.zeros(NUM_KEYPOINTS, bool)
    full[list(order)], mask[list(order)] = joints, valid
    return full, mask


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The datasets folder: an explicit path, else ``POSE_DATA_DIR``, else ../shared/datasets."""
    root = Path(path or os.environ.get("POSE_DATA_DIR", "../shared/datasets"))
    if not (root / "lsp" / "joints.mat").exists():
        raise FileNotFoundError(f"no LSP dataset under {root} (set --data or POSE_DATA_DIR)")
    return root


def _loadmat(path: Path) -> np.ndarray:
    from scipy.io import loadmat  # train extra only

    return np.asarray(loadmat(str(path))["joints"], dtype=np.float64)


LSP_ORDER = tuple(range(NUM_LSP_KEYPOINTS))  # LSP/LSPET store joints 0-13 of the 19


def load_lsp(root: Path) -> list[Sample]:
    """LSP: joints.mat is 3x14xN (x, y, occluded flag); every joint is annotated."""
    arr = _loadmat(root / "lsp" / "joints.mat").transpose(2, 1, 0)  # N x 14 x 3
    return [Sample(str(root / "lsp" / "images" / f"im{i + 1:04d}.jpg"),
                   *_all_joints(a[:, :2], np.ones(NUM_LSP_KEYPOINTS, bool), LSP_ORDER))
            for i, a in enumerate(arr)]


def load_lspet(root: Path) -> list[Sample]:
    """LSPET: joints.mat is 14x3xN (x, y, visible flag); flag 0 = not annotated."""
    arr = _loadmat(root / "lspet" / "joints.mat").transpose(2, 0, 1)  # N x 14 x 3
    return [Sample(str(root / "lspet" / "images" / f"im{i + 1:05d}.jpg"),
                   *_all_joints(a[:, :2], (a[:, 2] > 0.5) & (a[:, 0] > 0) & (a[:, 1] > 0), LSP_ORDER))
            for i, a in enumerate(arr)]


def load_coco_people(folder: Path) -> list[Sample]:
    """A COCO keypoint file's people (coco_train's crops): COCO-17 → the 19, COCO's box.

    v = 0 (unlabelled) is masked; v = 1 (labelled, hidden) is trained on, as in COCO.
    """
    coco = json.loads((folder / "person_keypoints.json").read_text())
    images = {im["id"]: im for im in coco["images"]}
    samples = []
    for ann in coco["annotations"]:
        if ann.get("iscrowd"):
            continue
        kp = np.asarray(ann["keypoints"], np.float64).reshape(-1, 3)
        joints, valid = _all_joints(kp[:, :2], kp[:, 2] > 0, COCO_ORDER)
        samples.append(Sample(str(folder / "images" / images[ann["image_id"]]["file_name"]),
                              joints, valid, tuple(float(v) for v in ann["bbox"])))
    return samples


def coco_train_split(samples: list[Sample], val_photos: int = COCO_VAL_PHOTOS
                     ) -> tuple[list[Sample], list[Sample]]:
    """(train, val): every crop of the last ``val_photos`` photos (by COCO id) is held out, so
    no photo lends people to both."""
    photo = [Path(s.path).stem.rsplit("_", 1)[0] for s in samples]
    held = set(sorted(set(photo), key=int)[-val_photos:]) if val_photos else set()
    return ([s for s, p in zip(samples, photo) if p not in held],
            [s for s, p in zip(samples, photo) if p in held])


def splits(root: Path) -> dict[str, list[Sample]]:
    """The standard protocol: train = LSP 1-1000 + LSPET (+ coco_train), test = LSP 1001-2000.

    Held out for per-epoch monitoring, so the test half is never looked at during
    training: the last 300 LSPET photos (``val``) and the last ``COCO_VAL_PHOTOS`` coco_train
    photos (``val_coco``) when that set is present.
    """
    lsp, lspet = load_lsp(root), load_lspet(root)
    lspet = [s for s in lspet if s.valid.sum() >= 6]  # removed / near-empty LSPET frames
    out = {"train": [lsp[i] for i in LSP_TRAIN] + lspet[:-300], "val": lspet[-300:],
           "test": [lsp[i] for i in LSP_TEST]}
    if (root / "coco_train" / "person_keypoints.json").exists():
        coco_train, coco_val = coco_train_split(load_coco_people(root / "coco_train"))
        out["train"] += coco_train
        out["val_coco"] = coco_val
    return out


def match_detection(sample: Sample, detections: list[tuple[float, float, float, float]]
                    ) -> tuple[float, float, float, float]:
    """The person box for a sample without one: the detection that holds most of its labelled
    joints (ties: the best IoU with the joint box), as the service's detector would frame
    this person; the joint box grown 10 % when no detection holds at least half of them."""
    from models.detection import iou

    pts = sample.joints[sample.valid]
    jx, jy, jw, jh = person_box(sample.joints, sample.valid)
    joint_box = np.array([jx, jy, jx + jw, jy + jh])
    best, best_key = None, (0.5, -1.0)
    for x, y, w, h in detections:
        inside = ((pts[:, 0] >= x) & (pts[:, 0] <= x + w) & (pts[:, 1] >= y) & (pts[:, 1] <= y + h)).mean()
        overlap = float(iou(joint_box, np.array([[x, y, x + w, y + h]]))[0])
        if overlap >= 0.3 and (inside, overlap) >= best_key:
            best, best_key = (x, y, w, h), (inside, overlap)
    if best is not None:
        return best
    return jx - 0.05 * jw, jy - 0.05 * jh, 1.1 * jw, 1.1 * jh


def detector_boxes(samples: list[Sample]) -> list[Sample]:
    """Samples without a box get the shipped detector's (see ``match_detection``)."""
    from models.detection import Detector

    detector = Detector.load(threads=2)
    out = []
    for s in samples:
        if s.box is None:
            with Image.open(s.path) as img:
                found = detector(img.convert("RGB"), min_score=0.1, max_people=20)
            s = Sample(s.path, s.joints, s.valid, match_detection(s, [d.as_xywh() for d in found]))
        out.append(s)
    return out


def _crop_one(args: tuple[Sample, int, float]) -> tuple[np.ndarray, np.ndarray]:
    sample, size, margin = args
    box = CropBox.around(*(sample.box or person_box(sample.joints, sample.valid)), margin)
    with Image.open(sample.path) as img:
        pixels = crop_square(img.convert("RGB"), box, size)
    return pixels, box.to_crop(sample.joints).astype(np.float32)


def build_cache(root: Path, out: Path, size: int = 128, workers: int = 2,
                framing: str = "person") -> Path:
    """Decode every split once into ``out`` (.npz): images, joints in [0,1] crop units, valid.

    ``framing="person"``: crops around person boxes (COCO's, else the detector's: what the
    service crops); ``"joints"``: around the annotated joints (the older protocol).
    """
    arrays: dict[str, np.ndarray] = {}
    with ProcessPoolExecutor(workers) as pool:
        for name, samples in splits(root).items():
            if framing == "person":
                samples = detector_boxes(samples)
            else:
                samples = [Sample(s.path, s.joints, s.valid) for s in samples]
            crops = list(pool.map(_crop_one, [(s, size, CACHE_MARGIN) for s in samples],
                                  chunksize=64))
            arrays[f"{name}_images"] = np.stack([c[0] for c in crops])
            arrays[f"{name}_joints"] = np.stack([c[1] for c in crops])
            arrays[f"{name}_valid"] = np.stack([s.valid for s in samples])
    return write_cache(out, arrays, framing)


def write_cache(out: Path, arrays: dict[str, np.ndarray], framing: str = "person") -> Path:
    """Write a crop cache: ``arrays`` holds ``<split>_images`` (N,S,S,3) uint8,
    ``<split>_joints`` (N,19,2) in [0,1] crop units and ``<split>_valid`` (N,19) per split.
    The one place that knows the file's layout (``CachedSplit`` reads it), so test caches
    are written the way real ones are."""
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, cache_margin=CACHE_MARGIN, crop_margin=CROP_MARGIN, framing=framing, **arrays)
    return out


def describe_cache(cache: Path) -> str:
    """What a crop cache trains on, in words, for the checkpoint and the manifest."""
    with np.load(cache) as z:
        n = {k[:-len("_valid")]: len(z[k]) for k in z.files if k.endswith("_valid")}
        framing = str(z["framing"]) if "framing" in z.files else "joints"
    sets = "LSP im0001-im1000 + LSPET" + (" + coco_train" if "val_coco" in n else "")
    held = f"held out: {n.get('val', 0)} LSPET photos" + (
        f", {n['val_coco']} coco_train people of {COCO_VAL_PHOTOS} photos" if "val_coco" in n else "")
    frame = ("crops around person boxes (COCO's; the shipped detector's for LSP/LSPET)" if framing == "person"
             else "crops around the annotated joints")
    return f"{sets}: {n.get('train', 0)} people ({held}); {frame}"


LSP_ONLY_JOINTS: tuple[int, ...] = tuple(i for i, name in enumerate(KEYPOINT_NAMES) if name not in COCO_KEYPOINT_NAMES)


class CachedSplit:
    """One split of the cache, as uint8 images (N,H,W,3), joints (N,19,2), valid (N,19)."""

    def __init__(self, cache: Path, split: str) -> None:
        with np.load(cache) as z:
            self.images = z[f"{split}_images"]
            self.joints = z[f"{split}_joints"]
            self.valid = z[f"{split}_valid"]
            self.context = float(z["crop_margin"]) / float(z["cache_margin"])

    def __len__(self) -> int:
        return len(self.images)

    @staticmethod
    def has(cache: Path, split: str) -> bool:
        with np.load(cache) as z:
            return f"{split}_images" in z.files

    @property
    def from_coco(self) -> np.ndarray:
        """(N,) bool: the crops that came from COCO. COCO labels neither of LSP's own joints
        (neck, head top), and every LSP/LSPET person kept labels at least one of them."""
        return ~self.valid[:, list(LSP_ONLY_JOINTS)].any(1)


def epoch_order(split: CachedSplit, rng: np.random.Generator, coco_share: float | None = None) -> np.ndarray:
    """One epoch's sample indices: a permutation of the split, or, with ``coco_share``, as
    many samples of which that share are COCO crops (each source cycled through in a fresh
    random order, so nothing repeats before its whole source has been seen), shuffled."""
    n = len(split)
    if coco_share is None:
        return rng.permutation(n)
    if not 0.0 <= coco_share <= 1.0:
        raise ValueError(f"--coco-share {coco_share}: a fraction in [0, 1]")
    coco = split.from_coco
    take = {True: round(n * coco_share), False: n - round(n * coco_share)}
    parts = []
    for source, count in take.items():
        pool = np.flatnonzero(coco == source)
        if count and not len(pool):
            raise ValueError(f"--coco-share {coco_share}: the cache has no {'COCO' if source else 'LSP/LSPET'} crops")
        rounds = -(-count // max(len(pool), 1))
        parts.append(np.concatenate([rng.permutation(pool) for _ in range(rounds)] or [pool])[:count])
    return rng.permutation(np.concatenate(parts))


def half_body_framing(joints: np.ndarray, valid: np.ndarray, context: float, rng: np.random.Generator,
                      probability: float, min_joints: int = 8, min_half: int = 3
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Half-body crops (as SimpleBaseline and HRNet train): with ``probability``, a sample
    with at least ``min_joints`` labelled joints is framed around one half of the body
    (upper or lower, at random; the other when the chosen one has under ``min_half``
    joints) instead of the whole person, as a detector frames someone the photo cuts off.

    ``joints`` (N, K, 2) in [0, 1] of the cached crop. Returns (extent, centre, chosen):
    the output crop's side as a fraction of the cached crop's, its centre in [0, 1], and
    which samples were reframed; the others keep ``context`` around the centre.
    """
    n, k = valid.shape
    extent, centre = np.full(n, context), np.full((n, 2), 0.5)
    chosen = np.zeros(n, dtype=bool)
    halves = [np.array([i for i in half if i < k]) for half in (UPPER_BODY, LOWER_BODY)]
    draw, pick = rng.random(n), rng.random(n) < 0.5
    for i in np.flatnonzero((draw < probability) & (valid.sum(1) >= min_joints)):
        for half in (halves if pick[i] else halves[::-1]):
            ids = half[valid[i, half]]
            if len(ids) >= min_half:
                lo, hi = joints[i, ids].min(0), joints[i, ids].max(0)
                extent[i] = float(np.clip(1.5 * (hi - lo).max(), 0.3 * context, context))
                centre[i], chosen[i] = (lo + hi) / 2, True
                break
    return extent, centre, chosen


def occlude(images, rng: np.random.Generator, probability: float) -> None:
    """Random erasing, in place: with ``probability``, a rectangle of 5-20 % of the crop's
    area (aspect 0.3-3.3) is painted one random colour, so that a joint hidden behind
    something must be inferred from the rest of the body. ``images``: (N, 3, S, S) in [0, 1]."""
    n, _, size, _ = images.shape
    for i in np.flatnonzero(rng.random(n) < probability):
        area = rng.uniform(0.05, 0.2) * size * size
        aspect = math.exp(rng.uniform(math.log(0.3), math.log(1 / 0.3)))
        h = int(min(size, round(math.sqrt(area * aspect))))
        w = int(min(size, round(math.sqrt(area / aspect))))
        top, left = int(rng.integers(0, size - h + 1)), int(rng.integers(0, size - w + 1))
        colour = rng.uniform(0, 1, 3)
        for c in range(3):
            images[i, c, top:top + h, left:left + w] = float(colour[c])


# Aspect jitter's widest stretch: a 4:3 photo stored as a square (the squashed copies
# coco_dev holds, and any pipeline that resizes without keeping the aspect).
ASPECT_STRETCH = 4 / 3


def aspect_factors(n: int, rng: np.random.Generator, probability: float,
                   stretch: float = ASPECT_STRETCH) -> np.ndarray:
    """Per sample, the factor the person's width is multiplied by relative to their height:
    with ``probability``, log-uniform in [1/stretch, stretch] (people squashed or
    stretched as a non-square photo resized to a square shows them); else 1."""
    chosen = rng.random(n) < probability
    return np.where(chosen, np.exp(rng.uniform(-math.log(stretch), math.log(stretch), n)), 1.0)


def make_batch(split: CachedSplit, index: np.ndarray, size: int, mean: tuple[float, ...],
               std: tuple[float, ...], augment: bool, rng: np.random.Generator,
               half_body: float = 0.0, occlusion: float = 0.0, aspect: float = 0.0):
    """Crop, augment and normalise a batch; returns (images N3SS, joints NK2 in [0,1], valid NK).

    Augmentation follows the usual single-person recipe: scale 0.75-1.25, rotation ±30°
    (40% of samples), horizontal flip with the left/right joint swap, colour jitter ±20%;
    optionally half-body crops (``half_body_framing``), random erasing (``occlude``) and
    aspect jitter (``aspect_factors``: the crop's width and height scaled apart, area
    kept), each with its probability (0: off, and the random stream is the same as
    without them).
    """
    import torch
    import torch.nn.functional as F

    n = len(index)
    images = torch.from_numpy(split.images[index]).permute(0, 3, 1, 2).float() / 255.0
    joints = torch.from_numpy(split.joints[index]).clone()
    valid = torch.from_numpy(split.valid[index]).clone()
    scale = np.full(n, split.context)
    angle = np.zeros(n)
    flip = np.zeros(n, dtype=bool)
    shift = np.zeros((n, 2))
    if augment:
        scale *= rng.uniform(0.75, 1.25, n)
        angle = np.where(rng.random(n) < 0.4, rng.uniform(-30, 30, n), 0.0) * math.pi / 180
        flip = rng.random(n) < 0.5
        shift = rng.uniform(-0.05, 0.05, (n, 2))
        if half_body > 0:
            extent, centre, _ = half_body_framing(split.joints[index], split.valid[index], split.context,
                                                  rng, half_body)
            scale *= extent / split.context
            shift += 2 * centre - 1
    # Output x spans 1/sqrt(w) of the input it would, y sqrt(w): the person comes out w times
    # as wide relative to their height (w = 1: unchanged).
    widen = np.sqrt(aspect_factors(n, rng, aspect)) if augment and aspect > 0 else np.ones(n)
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    sign = np.where(flip, -1.0, 1.0)
    # theta maps output coords in [-1, 1] to input coords: in = A @ out + t.
    theta = np.stack([np.stack([cos * sign / widen, -sin * widen, shift[:, 0]], 1),
                      np.stack([sin * sign / widen, cos * widen, shift[:, 1]], 1)], 1)
    theta_t = torch.from_numpy(theta).float()
    grid = F.affine_grid(theta_t, [n, 3, size, size], align_corners=False)
    pad = torch.tensor(PAD_RGB).view(1, 3, 1, 1) / 255.0
    out = F.grid_sample(images - pad, grid, mode="bilinear", padding_mode="zeros",
                        align_corners=False) + pad
    # Joints: in [-1,1] input coords p = 2u - 1; output q = A^-1 (p - t).
    p = joints.double() * 2 - 1 - torch.from_numpy(shift)[:, None, :]
    a_inv = torch.linalg.inv(torch.from_numpy(theta[:, :, :2]))
    q = torch.einsum("nij,nkj->nki", a_inv, p)
    joints = ((q + 1) / 2).float()
    if flip.any():
        perm = torch.tensor(FLIP_PERMUTATION[:joints.shape[1]])
        f = torch.from_numpy(flip)
        joints[f] = joints[f][:, perm]
        valid[f] = valid[f][:, perm]
    if augment:
        jitter = torch.from_numpy(rng.uniform(0.8, 1.2, (n, 3, 1, 1))).float()
        out = (out * jitter).clamp(0, 1)
        if occlusion > 0:
            occlude(out, rng, occlusion)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (out - m) / s, joints, valid


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="datasets folder (default: $POSE_DATA_DIR or ../shared/datasets)")
    p.add_argument("--out", type=Path, default=Path("cache/lsp180.npz"))
    p.add_argument("--size", type=int, default=180,
                   help="cached crop side; ≥ input size × CACHE_MARGIN / CROP_MARGIN keeps real pixels")
    p.add_argument("--framing", choices=("person", "joints"), default="person",
                   help="crop around person boxes (COCO's / the detector's, as served) or the joints")


def main(args: argparse.Namespace) -> None:
    """``poseserve cache``."""
    print(build_cache(data_dir(args.data), args.out, args.size, framing=args.framing))
