"""Convolutional Pose Machine (Wei et al., CVPR 2016).

Mirrors Fig. 2(c)-(d): stage 1, g_1(x), maps the image to belief maps b_1; every later
stage g_t takes image features x' ⊕ the previous beliefs b_{t-1} ⊕ a Gaussian centre
map and refines them with stacked 7×7 convolutions, so the effective receptive field
grows stage by stage and a joint can be inferred from the others' beliefs. Every
stage's beliefs are returned for intermediate supervision.

Simplified: x' is the stage-1 trunk's features (shared, as in the authors' later VGG
version) instead of a separate network; no background belief map; BatchNorm added.

``backbone="movenet"`` (the shipped model) or ``"mobilenet_v2"``: that shared image-feature
network is a pretrained MobileNetV2 (MoveNet Lightning's pose-trained trunk, or ImageNet's)
merged top-down to 1/4 of the input (``models.backbone.TopDownFeatures``), the place the
authors' own VGG-19 version put its ImageNet initialisation. The stages g_t are unchanged
and trained from scratch.
"""
from __future__ import annotations

import torch
from torch import nn

from models.backbone import TopDownFeatures, use_pretrained
from models.heatmaps import render_gaussians
from models.architectures.registry import register
from models.keypoints import NUM_KEYPOINTS
from models.layers import conv_bn_relu


class ConvolutionalPoseMachine(nn.Module):
    output_kind = "heatmaps"
    stride = 4

    def __init__(self, num_keypoints: int = NUM_KEYPOINTS, input_size: int = 96,
                 width: int = 32, stages: int = 3, backbone: str | None = None) -> None:
        super().__init__()
        w, k = width, num_keypoints
        self.num_keypoints = k
        self.belief_input_start = 2 * w  # a stage reads [features x' (2w), beliefs (k), centre map]
        self.pretrained_part = "the image-feature network x' (the stages g_t are from scratch)"
        self.trunk = TopDownFeatures(2 * w, backbone) if use_pretrained(backbone) else nn.Sequential(
            conv_bn_relu(3, w, 5), nn.MaxPool2d(2),
            conv_bn_relu(w, w, 5), nn.MaxPool2d(2),
            conv_bn_relu(w, 2 * w, 5), conv_bn_relu(2 * w, 2 * w, 5))
        self.stage1 = nn.Sequential(conv_bn_relu(2 * w, 2 * w, 1), nn.Conv2d(2 * w, k, 1))
        self.refine = nn.ModuleList(nn.Sequential(
            conv_bn_relu(2 * w + k + 1, w, 1),
            conv_bn_relu(w, w, 7), conv_bn_relu(w, w, 7), conv_bn_relu(w, w, 7),
            conv_bn_relu(w, w, 1), nn.Conv2d(w, k, 1)) for _ in range(stages - 1))
        side = input_size // self.stride
        centre = render_gaussians(torch.full((1, 1, 2), 0.5), side, side, sigma=side / 4)
        self.register_buffer("centre_map", centre, persistent=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features = self.trunk(x)
        beliefs = [self.stage1(features)]
        centre = self.centre_map.expand(x.shape[0], -1, -1, -1)
        for stage in self.refine:
            beliefs.append(stage(torch.cat([features, beliefs[-1], centre], 1)))
        return beliefs


@register("cpm", loss="heatmap", stage_option="stages",
          paper="Wei et al., Convolutional Pose Machines, CVPR 2016")
def cpm(input_size: int = 96, width: int = 32, stages: int = 3, backbone: str | None = None,
        **kwargs) -> ConvolutionalPoseMachine:
    """Builder: ``stages`` ≥ 2; ``width`` scales the trunk and every stage;
    ``backbone`` (``"movenet"``, ``"mobilenet_v2"``) for the pretrained image-feature network."""
    return ConvolutionalPoseMachine(width=width, input_size=input_size, stages=stages,
                                    backbone=backbone, **kwargs)
