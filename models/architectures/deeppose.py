"""DeepPose (Toshev & Szegedy, CVPR 2014): holistic regression plus a cascade.

Mirrors Fig. 2 of the paper. Stage 1 is an AlexNet-shaped CNN (conv/pool layers, then
fully connected layers) that regresses all K joints as (x, y) normalised to the crop,
trained with L2. Each cascade stage s ≥ 2 crops a patch around every joint's current
estimate (side ``patch_scale`` of the crop, the paper's σ·diam(y) with a fixed
diameter), runs one shared CNN on it, and takes that joint's row of the K×2 output as
a displacement, scaled back by the patch size.

Simplified: far narrower layers (the paper's 4096-wide FCs become ``fc``), BatchNorm
instead of LRN, stages trained jointly (the paper trains them one after another) with
the patch centres detached and jittered during training like its simulated predictions.

``backbone="mobilenet_v2"`` or ``"movenet"`` (the shipped model: MoveNet Lightning's
pose-trained trunk): stage 1 is a pretrained MobileNetV2 with the same kind of fully
connected regression head (``models.backbone.PretrainedRegressor``), where the paper used
an ImageNet-pretrained AlexNet. The cascade's patch network stays small and is trained
from scratch.
"""
from __future__ import annotations

import torch
from torch import nn
import torch.nn.functional as F

from models.architectures.registry import register
from models.backbone import PretrainedRegressor, use_pretrained
from models.keypoints import NUM_KEYPOINTS
from models.layers import conv_bn_relu


def _alexnet_like(width: int, in_size: int, fc: int, outputs: int) -> nn.Sequential:
    """Five convs with three poolings, then two fully connected layers."""
    w = width
    convs = nn.Sequential(
        conv_bn_relu(3, w, 5, 2), nn.MaxPool2d(2),
        conv_bn_relu(w, 2 * w, 3), nn.MaxPool2d(2),
        conv_bn_relu(2 * w, 4 * w, 3), conv_bn_relu(4 * w, 4 * w, 3),
        conv_bn_relu(4 * w, 4 * w, 3), nn.MaxPool2d(2))
    side = in_size // 16
    return nn.Sequential(convs, nn.Flatten(), nn.Linear(4 * w * side * side, fc),
                         nn.ReLU(inplace=True), nn.Dropout(0.3), nn.Linear(fc, outputs))


class DeepPose(nn.Module):
    output_kind = "coordinates"

    def __init__(self, num_keypoints: int = NUM_KEYPOINTS, input_size: int = 96, width: int = 32,
                 fc: int = 256, refine_stages: int = 1, patch_size: int = 16,
                 patch_scale: float = 0.3, backbone: str | None = None) -> None:
        super().__init__()
        assert input_size % 16 == 0 and patch_size % 16 == 0
        self.num_keypoints, self.input_size = num_keypoints, input_size
        self.patch_size, self.patch_scale = patch_size, patch_scale
        self.pretrained_part = "stage 1's network (the cascade's patch network is from scratch)"
        self.stage1 = (PretrainedRegressor(input_size, 2 * num_keypoints, backbone=backbone) if use_pretrained(backbone)
                       else _alexnet_like(width, input_size, fc, 2 * num_keypoints))
        self.refiners = nn.ModuleList(
            _alexnet_like(width, patch_size, fc, 2 * num_keypoints) for _ in range(refine_stages))
        lin = torch.linspace(-1 + 1 / patch_size, 1 - 1 / patch_size, patch_size)
        gy, gx = torch.meshgrid(lin, lin, indexing="ij")
        self.register_buffer("patch_grid", torch.stack([gx, gy], -1), persistent=False)
        self.train_jitter = 0.03

    def patches(self, image: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
        """(N,3,S,S), (N,K,2) → (N*K, 3, P, P) crops centred on each joint."""
        n, k = centres.shape[:2]
        centre = (centres * 2 - 1).reshape(n * k, 1, 1, 2)
        grid = centre + self.patch_grid.unsqueeze(0) * self.patch_scale
        images = image.unsqueeze(1).expand(n, k, *image.shape[1:]).reshape(n * k, *image.shape[1:])
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros",
                             align_corners=False)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Returns the (N, K, 2) normalised estimate after every stage."""
        n, k = x.shape[0], self.num_keypoints
        y = self.stage1(x).view(n, k, 2) + 0.5
        stages = [y]
        eye = torch.eye(k, device=x.device, dtype=x.dtype).view(1, k, k, 1)
        for refiner in self.refiners:
            centres = y.detach()
            if self.training:
                centres = centres + torch.randn_like(centres) * self.train_jitter
            out = refiner(self.patches(x, centres)).view(n, k, k, 2)
            # Joint i's patch answers for joint i: keep the diagonal of the K x K x 2 output.
            y = centres + (out * eye).sum(2) * self.patch_scale
            stages.append(y)
        return stages


@register("deeppose", loss="coordinates",
          paper="Toshev & Szegedy, DeepPose: Human Pose Estimation via Deep Neural Networks, CVPR 2014")
def deeppose(input_size: int = 96, width: int = 32, backbone: str | None = None, **kwargs) -> DeepPose:
    """Builder: ``width`` scales every layer (params grow ~quadratically)."""
    return DeepPose(width=width, input_size=input_size, backbone=backbone, **kwargs)
