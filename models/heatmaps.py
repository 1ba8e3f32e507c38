"""Gaussian heatmap rendering and decoding, written once for every architecture.

Coordinates are normalised to the crop: u in [0, 1], where heatmap cell ``j`` (of ``n``)
has its centre at ``(j + 0.5) / n``. Rendering and decoding use this one convention, so
a rendered map decodes back to its point up to the sub-pixel step. The service's numpy
twin of rendering and decoding is ``models.heatmap_codec``.
"""
from __future__ import annotations

import torch

from models.heatmap_codec import GAUSSIAN_TAIL, HEATMAP_SIGMA, HEATMAP_STRIDE  # noqa: F401 - re-exported


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


def decode_heatmaps(heatmaps: torch.Tensor, refine: str = "taylor") -> torch.Tensor:
    """Hard argmax plus a sub-pixel step; returns (N, K, 3): normalised x, y and the peak value.

    ``refine="quarter"``: move a quarter cell towards the higher neighbour (Newell et al.).
    ``refine="taylor"``: fit a parabola to the log-heatmap through the peak and its two
    neighbours on each axis and take its vertex — exact for a Gaussian peak, the
    per-axis form of DARK's Taylor expansion (Zhang et al., CVPR 2020); clamped to half a
    cell. Both are export-friendly (ArgMax, Gather and elementwise ops only).
    """
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    score, idx = flat.max(dim=2)
    x = idx % w
    y = torch.div(idx, w, rounding_mode="floor")

    def at(xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        lin = yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)
        return flat.gather(2, lin.unsqueeze(2)).squeeze(2)

    inside_x = ((x > 0) & (x < w - 1)).float()
    inside_y = ((y > 0) & (y < h - 1)).float()
    left, right, up, down = at(x - 1, y), at(x + 1, y), at(x, y - 1), at(x, y + 1)
    if refine == "quarter":
        dx = 0.25 * torch.sign(right - left) * inside_x
        dy = 0.25 * torch.sign(down - up) * inside_y
    else:
        floor = score.unsqueeze(-1).clamp(min=1e-6) * 1e-3  # logs of tiny or negative values
        log = lambda v: torch.log(torch.maximum(v, floor.squeeze(-1)))  # noqa: E731
        lc, ll, lr, lu, ld = log(score), log(left), log(right), log(up), log(down)

        def vertex(a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
            curvature = a - 2 * lc + c  # < 0 at a maximum
            safe = torch.where(curvature < -1e-6, curvature, torch.full_like(curvature, -1.0))
            step = 0.5 * (a - c) / safe
            return torch.where(curvature < -1e-6, step, torch.zeros_like(step)).clamp(-0.5, 0.5)

        dx = vertex(ll, lr) * inside_x
        dy = vertex(lu, ld) * inside_y
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
