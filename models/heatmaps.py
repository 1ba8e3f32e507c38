"""Gaussian heatmap rendering and decoding, written once for every architecture.

Coordinates are normalised to the crop: u in [0, 1], where heatmap cell ``j`` (of ``n``)
has its centre at ``(j + 0.5) / n``. Rendering and decoding use this one convention, so
a rendered map decodes back to its point up to the sub-pixel step.
"""
from __future__ import annotations

import torch

# Heatmaps are at 1/HEATMAP_STRIDE of the input resolution (Newell et al.'s convention,
# shared by every heatmap architecture here).
HEATMAP_STRIDE = 4
# Width of the Gaussians, in heatmap cells: the training targets and the maps rendered for
# coordinate regressors use the same value (Newell et al. use 1 at 64×64).
HEATMAP_SIGMA = 1.0


def cell_centres(n: int, device: torch.device | None = None) -> torch.Tensor:
    """Normalised centres of ``n`` cells along one axis."""
    return (torch.arange(n, device=device, dtype=torch.float32) + 0.5) / n


def render_gaussians(coords: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    """Render (N, K, 2) normalised points as (N, K, H, W) unit-peak Gaussians.

    Differentiable in ``coords`` (IEF feeds its current pose back through this), and
    ``sigma`` is in heatmap cells.
    """
    xs = cell_centres(width, coords.device).view(1, 1, 1, width)
    ys = cell_centres(height, coords.device).view(1, 1, height, 1)
    dx = (xs - coords[..., 0:1, None]) * width
    dy = (ys - coords[..., 1:2, None]) * height
    return torch.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma))


def decode_heatmaps(heatmaps: torch.Tensor) -> torch.Tensor:
    """Hard argmax with the quarter-cell sub-pixel step of Newell et al.

    Returns (N, K, 3): normalised x, y and the peak value as a confidence score. The
    step moves the argmax a quarter cell towards the higher neighbour, which removes
    most of the quantisation error of a coarse grid. Export-friendly (ArgMax + Gather).
    """
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, h * w)
    score, idx = flat.max(dim=2)
    x = idx % w
    y = torch.div(idx, w, rounding_mode="floor")

    def at(xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
        lin = yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)
        return flat.gather(2, lin.unsqueeze(2)).squeeze(2)

    dx = torch.sign(at(x + 1, y) - at(x - 1, y)) * (x > 0) * (x < w - 1)
    dy = torch.sign(at(x, y + 1) - at(x, y - 1)) * (y > 0) * (y < h - 1)
    u = (x.float() + 0.5 + 0.25 * dx) / w
    v = (y.float() + 0.5 + 0.25 * dy) / h
    return torch.stack([u, v, score], dim=2)


def soft_argmax(heatmaps: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """Differentiable expectation of the normalised position under softmax(beta * maps)."""
    n, k, h, w = heatmaps.shape
    prob = torch.softmax(beta * heatmaps.reshape(n, k, h * w), dim=2).reshape(n, k, h, w)
    u = (prob.sum(2) * cell_centres(w, heatmaps.device)).sum(2)
    v = (prob.sum(3) * cell_centres(h, heatmaps.device)).sum(2)
    return torch.stack([u, v], dim=2)
