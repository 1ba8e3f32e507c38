"""Gaussian heatmap rendering and decoding, written once for every architecture.

Coordinates are normalised to the crop: u in [0, 1], where heatmap cell ``j`` (of ``n``)
has its centre at ``(j + 0.5) / n``. Rendering and decoding use this one convention, so
a rendered map decodes back to its point up to the sub-pixel step. The service's numpy
twin of rendering and decoding is ``models.heatmap_codec``.
"""
from __future__ import annotations

import torch

from models.heatmap_codec import GAUSSIAN_TAIL, HEATMAP_SIGMA, HEATMAP_STRIDE, REFINEMENTS, blur_band  # noqa: F401 - re-exported


def cell_centres(n: int, device: torch.device | None = None) -> torch.Tensor:
    """Normalised centres of ``n`` cells along one axis."""
    return (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n


def render_gaussians(coords: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    """Render (N, K, 2) normalised points as (N, K, H, W) unit-peak Gaussians.

    Differentiable in ``coords`` (IEF feeds its current pose back through this), and
    ``sigma`` is in heatmap cells; the tail beyond ``GAUSSIAN_TAIL`` is exactly 0 (no
    subnormal floats for the next convolution to read).
    """
    xs = cell_centres(width, coords.device).view(1, 1, 1, width)
    ys = cell_centres(height, coords.device).view(1, 1, height, 1)
    dx = (xs - coords[..., 0:1, None]) * width
    dy = (ys - coords[..., 1:2, None]) * height
    exponent = (dx * dx + dy * dy) / (2 * sigma * sigma)
    # the clamp keeps exp itself out of the subnormal range; the mask zeroes the tail
    return torch.exp(-exponent.clamp(max=GAUSSIAN_TAIL)) * (exponent < GAUSSIAN_TAIL)


def peak_window(flat: torch.Tensor, x: torch.Tensor, y: torch.Tensor, h: int, w: int, radius: int) -> torch.Tensor:
    """(N, K, H·W) maps → (N, K, 2·radius + 1, 2·radius + 1): the cells around each peak
    (x, y), zeros beyond the map's border (the numpy twin's ``peak_window``)."""
    offsets = torch.arange(-radius, radius + 1, device=flat.device)
    xs, ys = x.unsqueeze(-1) + offsets, y.unsqueeze(-1) + offsets
    lin = ys.clamp(0, h - 1).unsqueeze(-1) * w + xs.clamp(0, w - 1).unsqueeze(-2)
    values = flat.gather(2, lin.flatten(2)).view(lin.shape)
    inside = ((ys >= 0) & (ys < h)).unsqueeze(-1) & ((xs >= 0) & (xs < w)).unsqueeze(-2)
    return values * inside.to(values.dtype)


def decode_heatmaps(heatmaps: torch.Tensor, refine: str = "taylor", sigma: float = HEATMAP_SIGMA) -> torch.Tensor:
    """Hard argmax plus a sub-cell step; returns (N, K, 3): normalised x, y and the peak value.

    ``refine="dark"``: blur the maps with the training targets' Gaussian (``sigma``
    cells), then take one Newton step on the blurred log-map from the raw peak, gradient
    and Hessian from its 3×3 neighbourhood (Zhang et al.'s DARK, CVPR 2020; clamped to a
    cell, none on the border ring). A network's peak is not a clean Gaussian; the blur
    makes it one again, and on the 256 px hourglass it bought +0.3 points of PCK@0.2 on LSP
    and coco_dev and +0.2 / +0.4 points of whole-photo AP over 17 / 12 joints against
    ``"taylor"`` (docs/accuracy.md).
    ``refine="taylor"``: per axis, the vertex of a parabola through the raw log-heatmap at
    the peak and its two neighbours (exact for a Gaussian peak); clamped to half a cell.
    ``refine="quarter"``: move a quarter cell towards the higher neighbour (Newell et al.).
    Only the 9 blurred cells the step reads are computed (a window of the raw maps between
    two band matrices), not whole blurred maps, which cost 0.6 ms per person on the CPU.
    All export-friendly (ArgMax, Gather, MatMul and elementwise ops only); the numpy twin
    ``models.heatmap_codec.decode_heatmaps`` computes the same.
    """
    if refine not in REFINEMENTS:
        raise ValueError(f"refine must be one of {REFINEMENTS}, not {refine!r}")
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    score, idx = flat.max(dim=2)
    x = idx % w
    y = torch.div(idx, w, rounding_mode="floor")
    if refine == "dark":  # the blur, only where it is read: the 3×3 cells around the peak
        band = torch.from_numpy(blur_band(sigma)).to(flat.device, flat.dtype)  # a constant of known shape
        near = band @ peak_window(flat, x, y, h, w, band.shape[1] // 2) @ band.T
    else:
        near = peak_window(flat, x, y, h, w, 1)

    def at(dx: int, dy: int) -> torch.Tensor:
        return near[..., 1 + dy, 1 + dx]

    inside_x = ((x > 0) & (x < w - 1)).float()
    inside_y = ((y > 0) & (y < h - 1)).float()
    centre, left, right, up, down = at(0, 0), at(-1, 0), at(1, 0), at(0, -1), at(0, 1)
    if refine == "quarter":
        dx = 0.25 * torch.sign(right - left) * inside_x
        dy = 0.25 * torch.sign(down - up) * inside_y
    else:
        floor = centre.clamp(min=1e-6) * 1e-3  # logs of tiny or negative values
        log = lambda v: torch.log(torch.maximum(v, floor))  # noqa: E731
        lc, ll, lr, lu, ld = log(centre), log(left), log(right), log(up), log(down)
        if refine == "taylor":
            def vertex(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
                curvature = a - 2 * lc + c  # < 0 at a maximum
                safe = torch.where(curvature < -1e-6, curvature, torch.full_like(curvature, -1.0))
                step = 0.5 * (a - c) / safe
                return torch.where(curvature < -1e-6, step, torch.zeros_like(step)).clamp(-0.5, 0.5)

            dx = vertex(ll, lr) * inside_x
            dy = vertex(lu, ld) * inside_y
        else:
            gx, gy = 0.5 * (lr - ll), 0.5 * (ld - lu)
            gxx, gyy = lr - 2 * lc + ll, ld - 2 * lc + lu
            gxy = 0.25 * (log(at(1, 1)) - log(at(1, -1)) - log(at(-1, 1)) + log(at(-1, -1)))
            det = gxx * gyy - gxy * gxy
            # negative definite (a maximum), and the whole neighbourhood inside the map
            peaked = (gxx < -1e-6) & (det > 1e-9) & (inside_x * inside_y > 0)
            safe = torch.where(peaked, det, torch.ones_like(det))
            zero = torch.zeros_like(det)
            dx = torch.where(peaked, -(gyy * gx - gxy * gy) / safe, zero).clamp(-1.0, 1.0)
            dy = torch.where(peaked, -(gxx * gy - gxy * gx) / safe, zero).clamp(-1.0, 1.0)
    u = (x.float() + 0.5 + dx) / w
    v = (y.float() + 0.5 + dy) / h
    return torch.stack([u, v, score], dim=2)


def soft_argmax(heatmaps: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Differentiable expectation of the normalised position under softmax(beta * maps)."""
    n, k, h, w = heatmaps.shape
    prob = torch.softmax(beta * heatmaps.reshape(n, k, h * w), dim=2).reshape(n, k, h, w)
    u = (prob.sum(2) * cell_centres(w, heatmaps.device)).sum(2)
    v = (prob.sum(3) * cell_centres(h, heatmaps.device)).sum(2)
    return torch.stack([u, v], dim=2)
