"""Iterative Error Feedback (Carreira et al., CVPR 2016).

Mirrors Fig. 1: the input is the image ⊕ K Gaussian heatmaps rendered from the
current pose y_t; a network f predicts a correction ε_t = f(x ⊕ g(y_t)), and
y_{t+1} = y_t + ε_t, starting from the mean training pose y_0. Corrections are bounded
(the paper caps the target's norm at L; here the output is also squashed by
``bound · tanh``), and the T steps are unrolled so the whole loop exports as one graph.

Simplified: f is a small residual CNN instead of GoogLeNet; training unrolls T steps
with the pose detached between steps (each step learns to correct the previous
estimate), in place of the paper's fixed-path consolidation schedule.

``pose_jitter`` (training only, set by ``poseserve train --pose-jitter``): Gaussian noise
on the starting pose y_0, drawn per sample and joint. Why: unrolled from the fixed mean
pose, each y_t is a function of the image alone, so f can predict all T corrections from
the image and ignore the maps; trained that way, f returned the same correction at every
step (cosine 0.996 between ε_1 and ε_3) and zeroed maps changed nothing. Noise on y_0 gives
reading the pose a reason; measured (``scripts/ief_feedback.py``), 35 minutes of it did not
make f read the maps, but the corrections it learned from the noisy starts reach further
(LSP +4.8 points, and the third correction now helps on everyday crops too).

``backbone="mobilenet_v2"`` or ``"movenet"`` (the shipped model: MoveNet Lightning's
pose-trained trunk): f is a pretrained MobileNetV2 with a fully connected head
(``models.backbone.PretrainedRegressor``) whose first layer also reads the K heatmaps
through zero-initialised extra input weights, as the paper extended its ImageNet
GoogLeNet to 3 + K input channels.
"""
from __future__ import annotations

import torch
from torch import nn

from models.heatmaps import render_gaussians
from models.architectures.registry import register
from models.backbone import PretrainedRegressor, use_pretrained
from models.keypoints import NUM_KEYPOINTS
from models.layers import Residual, conv_bn_relu


class IterativeErrorFeedback(nn.Module):
    output_kind = "coordinates"

    def __init__(self, num_keypoints: int = NUM_KEYPOINTS, input_size: int = 96, width: int = 32,
                 steps: int = 3, bound: float = 0.1, sigma: float = 3.0, fc: int = 256,
                 backbone: str | None = None) -> None:
        super().__init__()
        w, k = width, num_keypoints
        self.num_keypoints, self.input_size, self.steps = k, input_size, steps
        self.bound, self.sigma = bound, sigma
        self.pretrained_part = "f's convolutional network (its heatmap input weights and head are new)"
        pretrained = use_pretrained(backbone)
        self.f = PretrainedRegressor(input_size, 2 * k, fc, extra_channels=k, backbone=backbone) if pretrained else nn.Sequential(
            conv_bn_relu(3 + k, w, 5, 2), nn.MaxPool2d(2),
            Residual(w, 2 * w), nn.MaxPool2d(2),
            Residual(2 * w, 4 * w), nn.MaxPool2d(2),
            Residual(4 * w, 4 * w), nn.BatchNorm2d(4 * w), nn.ReLU(inplace=True),
            nn.Flatten(), nn.Linear(4 * w * (input_size // 16) ** 2, fc), nn.ReLU(inplace=True),
            nn.Linear(fc, 2 * k))
        last = (self.f.head if pretrained else self.f)[-1]  # ε starts at 0: y_1 = y_0
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
        # y_0: replaced by the training set's mean pose when training starts.
        self.register_buffer("mean_pose", torch.full((k, 2), 0.5))
        self.pose_jitter = 0.0  # std of the noise on y_0 while training

    def input_filters(self) -> tuple[torch.Tensor, torch.Tensor]:
        """f's first-layer filters that read the image and those that read the pose maps."""
        if isinstance(self.f, PretrainedRegressor):
            return self.f.trunk.features[0][0].weight, self.f.extra.weight
        first = self.f[0][0].weight  # one first convolution over image ⊕ maps
        return first[:, :3], first[:, 3:]

    @torch.no_grad()
    def redraw_pose_input(self, scale: float) -> None:
        """Re-draw the filters that read the pose maps, normal with ``scale`` × the spread of
        the filters that read the image. Why: started at zero beside a pretrained image
        path, they stayed near zero (mean |w| 0.012 against 0.37 after 105 minutes) and
        their gradient never pointed one way for long: the maps barely showed in the
        features, so nothing downstream learned to use them. Drawn at the image's scale, the
        pose is visible from the first step; measured on one 24-minute epoch, f then read
        the maps (corrections no longer alike, cosine 0.96) but not yet to its profit
        (zeroed maps scored higher), so the shipped weights do not use it."""
        image, pose = self.input_filters()
        pose.copy_(torch.randn_like(pose) * scale * image.std())

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Returns y_0 (mean pose) and the pose after each of the T corrections."""
        n, s = x.shape[0], x.shape[-1]
        y = self.mean_pose.unsqueeze(0).expand(n, -1, -1)
        if self.training and self.pose_jitter > 0:
            y = y + self.pose_jitter * torch.randn_like(y)
        poses = [y]
        for _ in range(self.steps):
            y_in = y.detach() if self.training else y
            maps = render_gaussians(y_in, s, s, self.sigma).to(x.dtype)
            pretrained = isinstance(self.f, PretrainedRegressor)  # it reads the maps itself
            out = self.f(x, maps) if pretrained else self.f(torch.cat([x, maps], 1))
            eps = self.bound * torch.tanh(out.view(n, -1, 2))
            y = y_in + eps
            poses.append(y)
        return poses


@register("ief", loss="bounded_correction",
          paper="Carreira et al., Human Pose Estimation with Iterative Error Feedback, CVPR 2016")
def ief(input_size: int = 96, width: int = 32, steps: int = 3, backbone: str | None = None,
        **kwargs) -> IterativeErrorFeedback:
    """Builder: ``steps`` = T unrolled corrections (≥ 3 in the paper)."""
    return IterativeErrorFeedback(width=width, input_size=input_size, steps=steps,
                                  backbone=backbone, **kwargs)
