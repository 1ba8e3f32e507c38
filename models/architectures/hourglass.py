"""Stacked Hourglass (Newell et al., ECCV 2016).

Mirrors Fig. 3 (one hourglass: pool down to the lowest resolution, then nearest-
neighbour upsample and add the skip branch at each scale, every box a residual module
of Fig. 4) and Fig. 4 right (stacking: each stack predicts heatmaps, which go through a
1×1 conv and are added back with the features — intermediate supervision and
re-injection). Heatmaps are at 1/4 of the input resolution.

Simplified: narrower (``width`` instead of 256 features), shallower recursion for the
small input, one residual per branch.

``backbone="mobilenet_v2"`` or ``"movenet"``: the first hourglass's bottom-up half —
the paper's pool + residual steps from 1/4 down to 1/32 of the input — is a pretrained
MobileNetV2 (``models.backbone``: ImageNet's, or MoveNet's pose-trained one), whose strided blocks play the
pools. Its top-down half is unchanged: at each scale, nearest-neighbour upsampling plus
a skip branch (a 1×1 projection and a residual module of the bottom-up features). Every
later stack is the paper's hourglass. The paper trains from scratch; on 2 CPU cores the
pretrained bottom-up half reaches in minutes what the from-scratch one did in hours.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from models.backbone import STAGE_CHANNELS, MobileNetV2Trunk, use_pretrained
from models.architectures.registry import register
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


class PretrainedHourglass(nn.Module):
    """First stack with a MobileNetV2 bottom-up half; returns (stride-4 stream, output)."""

    def __init__(self, features: int, backbone: str = "mobilenet_v2") -> None:
        super().__init__()
        f = features
        self.trunk = MobileNetV2Trunk(backbone)
        self.lateral = nn.ModuleDict({str(s): conv_bn_relu(c, f, 1) for s, c in STAGE_CHANNELS.items()})
        self.skip = nn.ModuleDict({str(s): Residual(f, f) for s in (4, 8, 16)})
        self.up = nn.ModuleDict({str(s): Residual(f, f) for s in (4, 8, 16)})

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.trunk(x)
        lateral = {s: self.lateral[str(s)](feats[s]) for s in feats}
        y = lateral[32]
        for s in (16, 8, 4):
            y = self.up[str(s)](self.skip[str(s)](lateral[s])
                                + F.interpolate(y, scale_factor=2.0, mode="nearest"))
        return lateral[4], y


class StackedHourglass(nn.Module):
    output_kind = "heatmaps"
    stride = 4

    def __init__(self, num_keypoints: int = NUM_KEYPOINTS, width: int = 64, stacks: int = 2,
                 depth: int = 3, backbone: str | None = None) -> None:
        super().__init__()
        f = width
        pretrained = use_pretrained(backbone)
        self.num_keypoints = num_keypoints
        self.first = PretrainedHourglass(f, backbone) if pretrained else None
        self.pretrained_part = "the first hourglass's bottom-up half"
        self.stem = None if pretrained else nn.Sequential(
            conv_bn_relu(3, f // 2, 7, 2), Residual(f // 2, f),
            nn.MaxPool2d(2), Residual(f, f), Residual(f, f))
        self.hourglasses = nn.ModuleList(Hourglass(depth, f) for _ in range(stacks - pretrained))
        self.features = nn.ModuleList(nn.Sequential(Residual(f, f), conv_bn_relu(f, f, 1))
                                      for _ in range(stacks))
        self.heads = nn.ModuleList(nn.Conv2d(f, num_keypoints, 1) for _ in range(stacks))
        self.merge_features = nn.ModuleList(nn.Conv2d(f, f, 1) for _ in range(stacks - 1))
        self.merge_heatmaps = nn.ModuleList(nn.Conv2d(num_keypoints, f, 1) for _ in range(stacks - 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        if self.first is not None:
            x, y = self.first(x)
            stacks = [None, *self.hourglasses]  # stack 1 already ran inside ``first``
        else:
            x, y = self.stem(x), None
            stacks = list(self.hourglasses)
        outputs = []
        for i, (hg, feat, head) in enumerate(zip(stacks, self.features, self.heads)):
            y = feat(hg(x) if hg is not None else y)
            heatmaps = head(y)
            outputs.append(heatmaps)
            if i < len(self.merge_features):
                x = x + self.merge_features[i](y) + self.merge_heatmaps[i](heatmaps)
        return outputs


@register("hourglass", loss="heatmap", stage_option="stacks",
          paper="Newell et al., Stacked Hourglass Networks for Human Pose Estimation, ECCV 2016")
def hourglass(input_size: int = 128, width: int = 64, stacks: int = 2, depth: int = 3,
              backbone: str | None = None, **kwargs) -> StackedHourglass:
    """Builder: ``stacks`` ≥ 2 for intermediate supervision; ``depth`` pool levels;
    ``backbone`` (``"mobilenet_v2"``, ``"movenet"``) for the pretrained bottom-up half of the first stack.
    Fully convolutional: any ``input_size`` divisible by 4 × 2^depth."""
    return StackedHourglass(width=width, stacks=stacks, depth=depth, backbone=backbone, **kwargs)
