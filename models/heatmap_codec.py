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


# How a heatmap graph turns its maps into points (``refine``): "dark" (what graphs are
# exported with) blurs the maps with the training targets' Gaussian first; "taylor" (graphs
# whose manifests name no decoding) and "quarter" read the raw maps. The manifest's
# ``decoding`` says which; ``poseserve eval --refine`` compares them on a checkpoint.
REFINEMENTS = ("dark", "taylor", "quarter")
# The blur's radius in sigmas: 11 taps at sigma 2, the kernel of Zhang et al.'s DARK.
BLUR_RADIUS = 2.5


def blur_taps(sigma: float) -> np.ndarray:
    """The 1-D Gaussian (unit sum) the "dark" decoding blurs each axis with."""
    radius = max(1, int(np.ceil(BLUR_RADIUS * sigma)))
    t = np.arange(-radius, radius + 1, dtype=np.float32)
    taps = np.exp(-t * t / (2 * sigma * sigma))
    return (taps / taps.sum()).astype(np.float32)


def blur_band(sigma: float) -> np.ndarray:
    """(3, 2r + 3): row i holds ``blur_taps(sigma)`` (radius r) starting at column i, so
    ``band @ window @ band.T`` is the blurred 3×3 neighbourhood of a window's centre."""
    taps = blur_taps(sigma)
    band = np.zeros((3, len(taps) + 2), np.float32)
    for i in range(3):
        band[i, i:i + len(taps)] = taps
    return band


def peak_window(flat: np.ndarray, x: np.ndarray, y: np.ndarray, h: int, w: int, radius: int) -> np.ndarray:
    """(N, K, H·W) maps → (N, K, 2·radius + 1, 2·radius + 1): the cells around each peak
    (x, y), zeros beyond the map's border."""
    offsets = np.arange(-radius, radius + 1)
    xs, ys = x[..., None] + offsets, y[..., None] + offsets
    lin = np.clip(ys, 0, h - 1)[..., :, None] * w + np.clip(xs, 0, w - 1)[..., None, :]
    n, k = x.shape
    values = np.take_along_axis(flat, lin.reshape(n, k, -1), 2).reshape(lin.shape)
    inside = ((ys >= 0) & (ys < h))[..., :, None] & ((xs >= 0) & (xs < w))[..., None, :]
    return values * inside


def decode_heatmaps(heatmaps: np.ndarray, refine: str = "taylor", sigma: float = HEATMAP_SIGMA) -> np.ndarray:
    """(N, K, H, W) → (N, K, 3): normalised x, y and peak value; numpy twin of the graph's
    decoding (``models.heatmaps.decode_heatmaps``): hard argmax, then a sub-cell step.

    ``"taylor"``: per axis, the vertex of a parabola through the log-heatmap at the peak
    and its two neighbours, clamped to half a cell, none at the border. ``"dark"``: the
    maps blurred by the targets' Gaussian (``sigma`` cells, zeros beyond the border), then
    one Newton step on the blurred log-map from the raw maps' peak (gradient and Hessian
    from its 3×3 neighbourhood), clamped to a cell, none on the border ring; the score
    stays the raw peak. Only those 9 blurred cells are computed (a window of the raw maps
    between two band matrices): blurring whole maps cost 0.6 ms per person on the CPU. The blur is what pays: a network's peak is not a clean Gaussian, and the
    targets' own kernel smooths it back towards one (Zhang et al., CVPR 2020).
    ``"quarter"``: a quarter cell towards the higher neighbour (Newell et al.)."""
    if refine not in REFINEMENTS:
        raise ValueError(f"refine must be one of {REFINEMENTS}, not {refine!r}")
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w).astype(np.float32)
    idx = flat.argmax(2)
    score = np.take_along_axis(flat, idx[..., None], 2)[..., 0]
    x, y = idx % w, idx // w
    if refine == "dark":  # the blur, only where it is read: the 3×3 cells around the peak
        band = blur_band(sigma)
        near = band @ peak_window(flat, x, y, h, w, band.shape[1] // 2) @ band.T
    else:
        near = peak_window(flat, x, y, h, w, 1)

    def at(dx: int, dy: int) -> np.ndarray:
        return near[..., 1 + dy, 1 + dx]

    inside_x, inside_y = (x > 0) & (x < w - 1), (y > 0) & (y < h - 1)
    centre = at(0, 0)
    left, right, up, down = at(-1, 0), at(1, 0), at(0, -1), at(0, 1)
    if refine == "quarter":
        dx = 0.25 * np.sign(right - left) * inside_x
        dy = 0.25 * np.sign(down - up) * inside_y
    else:
        floor = np.maximum(centre, 1e-6) * 1e-3  # logs of tiny or negative values

        def log(v: np.ndarray) -> np.ndarray:
            return np.log(np.maximum(v, floor))

        lc, ll, lr, lu, ld = log(centre), log(left), log(right), log(up), log(down)
        if refine == "taylor":
            def vertex(a: np.ndarray, c: np.ndarray) -> np.ndarray:
                curvature = a - 2 * lc + c  # < 0 at a maximum
                peaked = curvature < -1e-6
                step = 0.5 * (a - c) / np.where(peaked, curvature, -1.0)
                return np.clip(np.where(peaked, step, 0.0), -0.5, 0.5)

            dx = vertex(ll, lr) * inside_x
            dy = vertex(lu, ld) * inside_y
        else:
            gx, gy = 0.5 * (lr - ll), 0.5 * (ld - lu)
            gxx, gyy = lr - 2 * lc + ll, ld - 2 * lc + lu
            gxy = 0.25 * (log(at(1, 1)) - log(at(1, -1)) - log(at(-1, 1)) + log(at(-1, -1)))
            det = gxx * gyy - gxy * gxy
            peaked = (gxx < -1e-6) & (det > 1e-9) & inside_x & inside_y  # negative definite: a maximum
            safe = np.where(peaked, det, 1.0)
            dx = np.clip(np.where(peaked, -(gyy * gx - gxy * gy) / safe, 0.0), -1.0, 1.0)
            dy = np.clip(np.where(peaked, -(gxx * gy - gxy * gx) / safe, 0.0), -1.0, 1.0)
    u = (x + 0.5 + dx) / w
    v = (y + 0.5 + dy) / h
    return np.stack([u, v, score], axis=2).astype(np.float32)
