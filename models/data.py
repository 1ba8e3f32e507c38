"""LSP / LSPET loading, the decoded-crop cache, and batch augmentation on tensors.

Why a cache: on a 2-core machine JPEG decoding would eat the training budget, so every
photo is decoded once into a square person crop with extra context (``CACHE_MARGIN``)
and stored as one compact ``.npz``. Augmentation (scale, rotation, flip with the
left/right swap, colour jitter) then runs on whole batches with ``affine_grid`` /
``grid_sample``, which costs little next to the forward pass.

The crops are made by ``models.transforms.crop_square``, the function the service uses.
"""
from __future__ import annotations

import argparse
import math
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from models.keypoints import FLIP_PERMUTATION, NUM_KEYPOINTS
from models.transforms import CROP_MARGIN, PAD_RGB, CropBox, crop_square, person_box

# The cache keeps more context than that, so scale/rotation augmentation has real pixels.
CACHE_MARGIN = 1.75
LSP_TRAIN = range(0, 1000)      # im0001-im1000
LSP_TEST = range(1000, 2000)    # im1001-im2000, never trained on


@dataclass(frozen=True)
class Sample:
    """One annotated photo: joints (14, 2) in image pixels, valid (14,) = annotated."""

    path: str
    joints: np.ndarray
    valid: np.ndarray


def data_dir(path: str | os.PathLike | None = None) -> Path:
    """The datasets folder: an explicit path, else ``POSE_DATA_DIR``, else ../shared/datasets."""
    root = Path(path or os.environ.get("POSE_DATA_DIR", "../shared/datasets"))
    if not (root / "lsp" / "joints.mat").exists():
        raise FileNotFoundError(f"no LSP dataset under {root} (set --data or POSE_DATA_DIR)")
    return root


def _loadmat(path: Path) -> np.ndarray:
    from scipy.io import loadmat  # train extra only

    return np.asarray(loadmat(str(path))["joints"], dtype=np.float64)


def load_lsp(root: Path) -> list[Sample]:
    """LSP: joints.mat is 3x14xN (x, y, occluded flag); every joint is annotated."""
    arr = _loadmat(root / "lsp" / "joints.mat").transpose(2, 1, 0)  # N x 14 x 3
    return [Sample(str(root / "lsp" / "images" / f"im{i + 1:04d}.jpg"), a[:, :2].copy(),
                   np.ones(NUM_KEYPOINTS, dtype=bool)) for i, a in enumerate(arr)]


def load_lspet(root: Path) -> list[Sample]:
    """LSPET: joints.mat is 14x3xN (x, y, visible flag); flag 0 = not annotated."""
    arr = _loadmat(root / "lspet" / "joints.mat").transpose(2, 0, 1)  # N x 14 x 3
    return [Sample(str(root / "lspet" / "images" / f"im{i + 1:05d}.jpg"), a[:, :2].copy(),
                   (a[:, 2] > 0.5) & (a[:, 0] > 0) & (a[:, 1] > 0)) for i, a in enumerate(arr)]


def splits(root: Path) -> dict[str, list[Sample]]:
    """The standard protocol: train = LSP 1-1000 + LSPET, test = LSP 1001-2000.

    The last 300 LSPET photos are held out as a validation set for per-epoch monitoring,
    so the test half is never looked at during training.
    """
    lsp, lspet = load_lsp(root), load_lspet(root)
    lspet = [s for s in lspet if s.valid.sum() >= 6]  # a few LSPET frames are near-empty
    return {"train": [lsp[i] for i in LSP_TRAIN] + lspet[:-300], "val": lspet[-300:],
            "test": [lsp[i] for i in LSP_TEST]}


def _crop_one(args: tuple[Sample, int, float]) -> tuple[np.ndarray, np.ndarray]:
    sample, size, margin = args
    box = CropBox.around(*person_box(sample.joints, sample.valid), margin)
    with Image.open(sample.path) as img:
        pixels = crop_square(img.convert("RGB"), box, size)
    return pixels, box.to_crop(sample.joints).astype(np.float32)


def build_cache(root: Path, out: Path, size: int = 128, workers: int = 2) -> Path:
    """Decode every split once into ``out`` (.npz): images, joints in [0,1] crop units, valid."""
    arrays: dict[str, np.ndarray] = {}
    with ProcessPoolExecutor(workers) as pool:
        for name, samples in splits(root).items():
            crops = list(pool.map(_crop_one, [(s, size, CACHE_MARGIN) for s in samples],
                                  chunksize=64))
            arrays[f"{name}_images"] = np.stack([c[0] for c in crops])
            arrays[f"{name}_joints"] = np.stack([c[1] for c in crops])
            arrays[f"{name}_valid"] = np.stack([s.valid for s in samples])
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out, cache_margin=CACHE_MARGIN, crop_margin=CROP_MARGIN, **arrays)
    return out


class CachedSplit:
    """One split of the cache, as uint8 images (N,H,W,3), joints (N,14,2), valid (N,14)."""

    def __init__(self, cache: Path, split: str) -> None:
        with np.load(cache) as z:
            self.images = z[f"{split}_images"]
            self.joints = z[f"{split}_joints"]
            self.valid = z[f"{split}_valid"]
            self.context = float(z["crop_margin"]) / float(z["cache_margin"])

    def __len__(self) -> int:
        return len(self.images)


def make_batch(split: CachedSplit, index: np.ndarray, size: int, mean: tuple[float, ...],
               std: tuple[float, ...], augment: bool, rng: np.random.Generator):
    """Crop, augment and normalise a batch; returns (images N3SS, joints NK2 in [0,1], valid NK).

    Augmentation follows the usual single-person recipe: scale 0.75-1.25, rotation ±30°
    (40% of samples), horizontal flip with the left/right joint swap, colour jitter ±20%.
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
    cos, sin = np.cos(angle) * scale, np.sin(angle) * scale
    sign = np.where(flip, -1.0, 1.0)
    # theta maps output coords in [-1, 1] to input coords: in = A @ out + t.
    theta = np.stack([np.stack([cos * sign, -sin, shift[:, 0]], 1),
                      np.stack([sin * sign, cos, shift[:, 1]], 1)], 1)
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
        perm = torch.tensor(FLIP_PERMUTATION)
        f = torch.from_numpy(flip)
        joints[f] = joints[f][:, perm]
        valid[f] = valid[f][:, perm]
    if augment:
        jitter = torch.from_numpy(rng.uniform(0.8, 1.2, (n, 3, 1, 1))).float()
        out = (out * jitter).clamp(0, 1)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (out - m) / s, joints, valid


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="datasets folder (default: $POSE_DATA_DIR or ../shared/datasets)")
    p.add_argument("--out", type=Path, default=Path("cache/lsp180.npz"))
    p.add_argument("--size", type=int, default=180,
                   help="cached crop side; ≥ input size × CACHE_MARGIN / CROP_MARGIN keeps real pixels")


def main(args: argparse.Namespace) -> None:
    """``poseserve cache``."""
    print(build_cache(data_dir(args.data), args.out, args.size))
