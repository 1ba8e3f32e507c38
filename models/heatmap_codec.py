"""The heatmap grid and its coding in numpy: the service's twin of ``models.heatmaps``.

Why a twin: the serving install has no torch, yet the service averages two passes'
heatmaps for the test-time flip (``models.flip``) and must decode them exactly as the
graphs do. The constants live here, torch-free, and ``models.heatmaps`` imports them;
tests hold each numpy function equal to its torch counterpart.
"""
from __future__ import annotations

import numpy as np

# Heatmaps are at 1/HEATMAP_STRIDE of the input resolution (Newell et al.'s convention,
# shared by every heatmap architecture here).
HEATMAP_STRIDE = 4
# Width of the Gaussians, in heatmap cells: the training targets and the maps rendered for
# coordinate regressors use the same value (Newell et al. use 1 at 64×64).
HEATMAP_SIGMA = 1.0
# Gaussians are cut to exactly 0 where the exponent exceeds this (beyond 10 sigma, values
# below 2e-22). Why: the uncut tail passes through float32's subnormal range (below
# 1.2e-38) in a ring around each point, and on some x86 CPUs a convolution reading
# subnormal inputs runs >10x slower: IEF's first layer, which reads the maps it renders,
# measured 21 ms with the tail against 1.7 ms without.
GAUSSIAN_TAIL = 50.0


def render_gaussians(coords: np.ndarray, height: int, width: int, sigma: float) -> np.ndarray:
    """(N, K, 2) normalised points → (N, K, H, W) unit-peak Gaussians, cell ``j`` of ``n``
    centred at ``(j + 0.5) / n``."""
    xs = ((np.arange(width, dtype=np.float32) + 0.5) / width).reshape(1, 1, 1, width)
    ys = ((np.arange(height, dtype=np.float32) + 0.5) / height).reshape(1, 1, height, 1)
    dx = (xs - coords[..., 0:1, None]) * width
    dy = (ys - coords[..., 1:2, None]) * height
    exponent = (dx * dx + dy * dy) / (2 * sigma * sigma)
    # the clamp keeps exp itself out of the subnormal range; the mask zeroes the tail
    return (np.exp(-np.minimum(exponent, GAUSSIAN_TAIL)) * (exponent < GAUSSIAN_TAIL)).astype(np.float32)


def decode_heatmaps(heatmaps: np.ndarray) -> np.ndarray:
    """(N, K, H, W) → (N, K, 3): normalised x, y and peak value; numpy twin of the graph's
    decoding (``models.heatmaps.decode_heatmaps``, ``refine="taylor"``): hard argmax, then
    per axis the vertex of a parabola through the log-heatmap at the peak and its two
    neighbours, clamped to half a cell, none at the border."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w).astype(np.float32)
    idx = flat.argmax(2)
    score = np.take_along_axis(flat, idx[..., None], 2)[..., 0]
    x, y = idx % w, idx // w

    def at(xx: np.ndarray, yy: np.ndarray) -> np.ndarray:
        lin = np.clip(yy, 0, h - 1) * w + np.clip(xx, 0, w - 1)
        return np.take_along_axis(flat, lin[..., None], 2)[..., 0]

    floor = np.maximum(score, 1e-6) * 1e-3  # logs of tiny or negative values

    def log(v: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(v, floor))

    centre = log(score)

    def vertex(a: np.ndarray, c: np.ndarray) -> np.ndarray:
        curvature = a - 2 * centre + c  # < 0 at a maximum
        peaked = curvature < -1e-6
        step = 0.5 * (a - c) / np.where(peaked, curvature, -1.0)
        return np.clip(np.where(peaked, step, 0.0), -0.5, 0.5)

    dx = vertex(log(at(x - 1, y)), log(at(x + 1, y))) * ((x > 0) & (x < w - 1))
    dy = vertex(log(at(x, y - 1)), log(at(x, y + 1))) * ((y > 0) & (y < h - 1))
    u = (x + 0.5 + dx) / w
    v = (y + 0.5 + dy) / h
    return np.stack([u, v, score], axis=2).astype(np.float32)
