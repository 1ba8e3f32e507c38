"""Test-time flip outside the graph: run each crop and its mirror image, average the two.

Why outside: averaging with the mirrored crop buys about a point of PCK for a second
forward pass per person. Baked into the graph, every request paid it; here the same
plain graph serves both, and the caller (a request's ``flip``, ``poseserve eval
--flip-test``) decides whether the point is worth the time.

Why the decoded outputs can be averaged: the graphs answer in normalised crop
coordinates whose (0, 0) and (1, 1) are the crop's corners, so a point at ``x`` in the
mirrored crop lies at exactly ``1 - x`` in the original, and heatmap cell ``w - 1 - i``
mirrors cell ``i``. Mirroring also swaps the person's sides, so joint ``i`` of the
mirrored answer is joint ``permutation[i]`` of the original (the manifest's
``flip_permutation``).

Heatmap models are averaged *before* decoding, as in the literature, and decoded again
here (``models.heatmap_codec``: the graph's decoding in numpy; a test holds the two equal):
averaging the two decoded points instead cost PCK (LSP 0.872 → 0.863 for the hourglass,
below no flip at all, 0.867), because where the passes disagree, e.g. between a left and
a right ankle, the midpoint is on neither. Coordinate regressors are averaged as points.

Torch-free: the service imports it.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from models.heatmap_codec import HEATMAP_SIGMA, decode_heatmaps, render_gaussians

# Each graph output: which axis holds the joints, and what mirroring does to its values.
_OUTPUTS: dict[str, tuple[int, str]] = {
    "keypoints": (1, "x"),           # (N, K, 2)
    "stage_keypoints": (2, "x"),     # (N, T, K, 2)
    "scores": (1, ""),               # (N, K)
    "heatmaps": (1, "columns"),      # (N, K, H, W)
    "stage_heatmaps": (2, "columns"),  # (N, T, K, H, W)
}


def with_mirrors(batch: np.ndarray) -> np.ndarray:
    """(N, C, H, W) crops → (2N, C, H, W): the crops, then each one mirrored left to right."""
    return np.concatenate([batch, batch[..., ::-1]])


def unmirror(name: str, values: np.ndarray, permutation: Sequence[int]) -> np.ndarray:
    """An output computed on mirrored crops, expressed on the original crops."""
    if name not in _OUTPUTS:
        raise ValueError(f"no flip rule for output {name!r}")
    axis, kind = _OUTPUTS[name]
    perm = list(permutation)[:values.shape[axis]]  # a model with fewer joints predicts the prefix
    values = np.take(values, perm, axis=axis)
    if kind == "x":
        values = values.copy()
        values[..., 0] = 1.0 - values[..., 0]
    elif kind == "columns":
        values = values[..., ::-1]
    return values


def merge_mirrored(outputs: dict[str, np.ndarray], permutation: Sequence[int],
                   output_kind: str = "heatmaps", refine: str = "taylor",
                   sigma: float = HEATMAP_SIGMA) -> dict[str, np.ndarray]:
    """Outputs of a ``with_mirrors`` batch → the averaged outputs of the original N crops.

    ``output_kind`` is the manifest's: for ``"heatmaps"`` every stage's maps are averaged
    and decoded again, as the graph decodes (``refine`` and ``sigma``: the manifest's
    ``decoding``); a coordinate regressor's points are averaged and its ``heatmaps``
    rendered again at them (as the graph renders them).
    """
    merged = {}
    for name, values in outputs.items():
        n = len(values) // 2
        mirrored = unmirror(name, values[n:], permutation)
        merged[name] = ((values[:n] + mirrored) / 2).astype(values.dtype, copy=False)
    if output_kind == "heatmaps" and "stage_heatmaps" in merged:
        stages = merged["stage_heatmaps"]
        decoded = decode_heatmaps(stages.reshape(-1, *stages.shape[2:]), refine, sigma).reshape(*stages.shape[:3], 3)
        merged["stage_keypoints"] = decoded[..., :2]
        merged["keypoints"] = decoded[:, -1, :, :2]
        merged["scores"] = decoded[:, -1, :, 2]
        merged["heatmaps"] = stages[:, -1]
    elif output_kind != "heatmaps" and "heatmaps" in merged:
        h, w = merged["heatmaps"].shape[-2:]
        merged["heatmaps"] = render_gaussians(merged["keypoints"], h, w, HEATMAP_SIGMA)
    return merged
