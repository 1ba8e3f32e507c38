"""Stacked Hourglass (Newell et al., ECCV 2016).

Mirrors Fig. 3 (one hourglass: pool down to the lowest resolution, then nearest-
neighbour upsample and add the skip branch at each scale, every box a residual module
of Fig. 4) and Fig. 4 right (stacking: each stack predicts heatmaps, which go through a
1×1 conv and are added back with the features — intermediate supervision and
re-injection). Heatmaps are at 1/4 of the input resolution.

Simplified: narrower (``width`` instead of 256 features), shallower recursion for the
small input, one residual per branch.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from models.keypoints import NUM_KEYPOINTS
from models.layers import Residual, conv_bn_relu


class Hourglass(nn.Module):
    """One recursive hourglass of ``depth`` pool/upsample levels."""

    def __init__(self, depth: int, features: int) -> None:
        super().__init__()
        self.skip = Residual(features, features)
        self.down = Residual(features, features)
        self.inner = Hourglass(depth - 1, features) if depth > 1 else Residual(features, features)
        self.up = Residual(features, features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        low = self.up(self.inner(self.down(F.max_pool2d(x, 2))))
        return self.skip(x) + F.interpolate(low, scale_factor=2.0, mode="nearest")


class StackedHourglass(nn.Module):
    output_kind = "heatmaps"
    stride = 4

    def __init__(self, num_keypoints: int = NUM_KEYPOINTS, width: int = 64, stacks: int = 2,
                 depth: int = 3) -> None:
        super().__init__()
        f = width
        self.stem = nn.Sequential(conv_bn_relu(3, f // 2, 7, 2), Residual(f // 2, f),
                                  nn.MaxPool2d(2), Residual(f, f), Residual(f, f))
        self.hourglasses = nn.ModuleList(Hourglass(depth, f) for _ in range(stacks))
        self.features = nn.ModuleList(nn.Sequential(Residual(f, f), conv_bn_relu(f, f, 1))
                                      for _ in range(stacks))
        self.heads = nn.ModuleList(nn.Conv2d(f, num_keypoints, 1) for _ in range(stacks))
        self.merge_features = nn.ModuleList(nn.Conv2d(f, f, 1) for _ in range(stacks - 1))
        self.merge_heatmaps = nn.ModuleList(nn.Conv2d(num_keypoints, f, 1) for _ in range(stacks - 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        outputs = []
        for i, (hg, feat, head) in enumerate(zip(self.hourglasses, self.features, self.heads)):
            y = feat(hg(x))
            heatmaps = head(y)
            outputs.append(heatmaps)
            if i < len(self.merge_features):
                x = x + self.merge_features[i](y) + self.merge_heatmaps[i](heatmaps)
        return outputs


def hourglass(width: int = 64, stacks: int = 2, depth: int = 3, **kwargs) -> StackedHourglass:
    """Builder: ``stacks`` ≥ 2 for intermediate supervision; ``depth`` pool levels."""
    return StackedHourglass(width=width, stacks=stacks, depth=depth, **kwargs)
