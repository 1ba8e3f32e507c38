"""Multi-resolution heatmap regressor (Tompson et al., NIPS 2014), the part-detector.

Mirrors Fig. 2 ("multi-resolution sliding-window with overlapping receptive fields"):
one convolutional bank is applied to the full-resolution crop and to a half-resolution
copy; the coarse features are upsampled and merged with the fine ones, then 1×1
convolutions (the paper's fully connected layers, run convolutionally) output one
heatmap per joint at 1/4 of the input resolution, trained with MSE against Gaussians.

Simplified: the bank's weights are shared between resolutions (as the issue asks) and
the graphical-model/MRF spatial stage is left out; BatchNorm is added.

``backbone="movenet"`` (the shipped model) or ``"mobilenet_v2"``: the bank is a
pretrained MobileNetV2 (MoveNet Lightning's pose-trained trunk, or ImageNet's) merged
top-down to 1/4 of its input (``models.backbone.TopDownFeatures``), still one set of
weights run at both resolutions. The paper trains from scratch; the pretrained bank is
used because it measured better on these 2 CPU cores (the scratch 64 px model: LSP
PCK@0.2 0.452; docs/accuracy.md has the shipped one's).
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from models.architectures.registry import register
from models.backbone import TopDownFeatures, use_pretrained
from models.keypoints import NUM_KEYPOINTS
from models.layers import conv_bn_relu


class MultiResolutionHeatmap(nn.Module):
    output_kind = "heatmaps"
    stride = 4

    def __init__(self, num_keypoints: int = NUM_KEYPOINTS, width: int = 32,
                 backbone: str | None = None) -> None:
        super().__init__()
        self.num_keypoints = num_keypoints
        w = width
        self.pretrained_part = "the convolutional bank, shared by both resolutions"
        self.bank = TopDownFeatures(2 * w, backbone) if use_pretrained(backbone) else nn.Sequential(
            conv_bn_relu(3, w, 5), nn.MaxPool2d(2),
            conv_bn_relu(w, w, 5), nn.MaxPool2d(2),
            conv_bn_relu(w, 2 * w, 5), conv_bn_relu(2 * w, 2 * w, 5))
        self.head = nn.Sequential(
            conv_bn_relu(4 * w, 4 * w, 5), conv_bn_relu(4 * w, 4 * w, 1),
            nn.Conv2d(4 * w, num_keypoints, 1))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        fine = self.bank(x)
        coarse = self.bank(F.avg_pool2d(x, 2))
        coarse = F.interpolate(coarse, size=fine.shape[-2:], mode="bilinear", align_corners=False)
        return [self.head(torch.cat([fine, coarse], 1))]


@register("tompson", loss="heatmap",
          paper="Tompson et al., Joint Training of a Convolutional Network and a Graphical Model "
                "for Human Pose Estimation, NIPS 2014")
def tompson(input_size: int = 96, width: int = 32, backbone: str | None = None,
            **kwargs) -> MultiResolutionHeatmap:
    """Builder: ``width`` is the first bank layer's channels (fully convolutional: any
    ``input_size`` divisible by 8; 64 with the pretrained bank)."""
    return MultiResolutionHeatmap(width=width, backbone=backbone, **kwargs)
