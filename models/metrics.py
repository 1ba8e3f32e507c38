"""PCK: the fraction of joints within ``alpha`` × torso diameter of the ground truth."""
from __future__ import annotations

import numpy as np

from models.keypoints import TORSO


def pck(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, alpha: float = 0.2
        ) -> tuple[np.ndarray, np.ndarray]:
    """Per-joint hits for (N, K, 2) predictions; returns (hits (N, K) bool, counted (N, K) bool).

    Torso diameter = distance from left shoulder to right hip (the LSP convention). A
    sample whose torso joints are not both annotated does not count.
    """
    a, b = TORSO
    torso = np.linalg.norm(gt[:, a] - gt[:, b], axis=1)
    counted = valid & (valid[:, [a]] & valid[:, [b]]) & (torso[:, None] > 0)
    dist = np.linalg.norm(pred - gt, axis=2)
    return (dist <= alpha * torso[:, None]) & counted, counted


def pck_summary(pred: np.ndarray, gt: np.ndarray, valid: np.ndarray, alpha: float = 0.2
                ) -> tuple[float, np.ndarray]:
    """(mean over all counted joints, per-joint PCK (K,))."""
    hits, counted = pck(pred, gt, valid, alpha)
    per_joint = hits.sum(0) / np.maximum(counted.sum(0), 1)
    return float(hits.sum() / max(counted.sum(), 1)), per_joint
