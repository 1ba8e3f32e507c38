"""MobileNetV2 (Sandler et al., CVPR 2018) as an ImageNet-pretrained feature trunk.

Why it is here: torchvision is not installable on these machines, yet ImageNet
pretraining is the single largest accuracy lever for pose networks trained on ~11k
photos (DeepPose and IEF were built on pretrained AlexNet/GoogLeNet for that reason).
This module reproduces torchvision's ``mobilenet_v2().features`` key for key, so its
state dict — ``features.0.0.weight`` … ``features.17.conv.3.*`` — loads unchanged from
``../shared/pretrained/imagenet/mobilenet_v2_imagenet.pth`` (or torchvision's own file).

The classifier and the final 1×1 (1280-channel) layer are left out: pose heads read the
multi-scale features ``forward`` returns (strides 4, 8, 16 and 32).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
import torch.nn.functional as F

# (expansion t, output channels c, repeats n, first stride s): Table 2 of the paper.
INVERTED_RESIDUAL_SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                             (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
# The pretrained weights expect RGB in [0, 1] mapped to [-1, 1] (see shared/pretrained/README).
PRETRAINED_MEAN = (0.5, 0.5, 0.5)
PRETRAINED_STD = (0.5, 0.5, 0.5)


@dataclass(frozen=True)
class TrunkWeights:
    """A pretrained MobileNetV2 trunk in ``../shared/pretrained``: file, origin and padding.

    ``same_padding``: the weights were trained with TF's "SAME" padding on the stride-2
    convolutions (nothing top/left, one pixel bottom/right). Symmetric padding shifts the
    sampling grid by a pixel, which an ImageNet classifier shrugs off but a pose network,
    whose output *is* a position, does not.
    """

    file: str
    source: str
    licence: str
    same_padding: bool


# The ``backbone`` names the builders take.
TRUNKS: dict[str, TrunkWeights] = {
    "mobilenet_v2": TrunkWeights("imagenet/mobilenet_v2_imagenet.pth",
                                 "ImageNet-1k MobileNetV2 1.0 (torchvision layout, features 0-17)",
                                 "Apache-2.0", same_padding=False),
    "movenet": TrunkWeights("movenet_trunk/mobilenet_v2_movenet.pth",
                            "MoveNet SinglePose Lightning v4 MobileNetV2 trunk (Google, Apache-2.0; "
                            "features 0-17, SAME padding)", "Apache-2.0", same_padding=True),
}
# Where each output stride ends in ``features``: strides 4, 8, 16, 32 → layers [0, end).
STAGE_ENDS = {4: 4, 8: 7, 16: 14, 32: 18}
STAGE_CHANNELS = {4: 24, 8: 32, 16: 96, 32: 320}


class _BottomRightPaddedConv(torch.autograd.Function):
    """The convolution of ``SameConv2d`` as ONNX writes it: one ``Conv`` node whose ``pads``
    attribute is asymmetric ([0, 0, 1, 1]), which the ONNX operator allows. Exported as
    PyTorch writes it (``Pad`` → ``Conv``), onnxruntime neither folds the pad into the
    convolution nor keeps it in its blocked NCHWc layout: each of these convolutions then
    cost a padded copy and two layout conversions (``poseserve profile-ops``)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, stride: int, groups: int) -> torch.Tensor:
        return F.conv2d(F.pad(x, (0, 1, 0, 1)), weight, None, stride, 0, 1, groups)

    @staticmethod
    def symbolic(g, x, weight, stride: int, groups: int):
        kernel = weight.type().sizes()[-2:]
        return g.op("Conv", x, weight, pads_i=[0, 0, 1, 1], strides_i=[stride, stride],
                    kernel_shape_i=kernel, group_i=groups, dilations_i=[1, 1])


class SameConv2d(nn.Conv2d):
    """A stride-2 3×3 convolution with TF's "SAME" padding for even input sides: zero rows
    and columns added only at the bottom and right. The same parameters (and state-dict
    keys) as ``nn.Conv2d``, so either padding loads either file."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.onnx.is_in_onnx_export() and self.bias is None:
            return _BottomRightPaddedConv.apply(x, self.weight, self.stride[0], self.groups)
        return self._conv_forward(F.pad(x, (0, 1, 0, 1)), self.weight, self.bias)


def _conv_bn_relu6(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
                   same_padding: bool = False) -> nn.Sequential:
    if same_padding and stride == 2:
        conv: nn.Conv2d = SameConv2d(cin, cout, kernel, stride, 0, groups=groups, bias=False)
    else:
        conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
    return nn.Sequential(conv, nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))


class InvertedResidual(nn.Module):
    """Expand (1×1) → depthwise 3×3 → linear project (1×1), identity skip when shapes match."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int, same_padding: bool = False) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [] if expand == 1 else [_conv_bn_relu6(cin, hidden, 1)]
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden, same_padding=same_padding),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.conv = nn.Sequential(*layers)
        self.use_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_skip else self.conv(x)


class MobileNetV2Trunk(nn.Module):
    """``features[0:18]`` of MobileNetV2 1.0; returns the features at strides 4, 8, 16, 32.

    ``backbone`` names the weights it is made for (``TRUNKS``), which fixes its padding.
    """

    def __init__(self, backbone: str = "mobilenet_v2") -> None:
        super().__init__()
        self.backbone = backbone
        same = TRUNKS[backbone].same_padding
        layers: list[nn.Module] = [_conv_bn_relu6(3, 32, 3, 2, same_padding=same)]
        cin = 32
        for t, c, n, s in INVERTED_RESIDUAL_SETTING:
            for i in range(n):
                layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t, same_padding=same))
                cin = c
        self.features = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> dict[int, torch.Tensor]:
        out, start = {}, 0
        for stride, end in STAGE_ENDS.items():
            for layer in self.features[start:end]:
                x = layer(x)
            out[stride], start = x, end
        return out


def use_pretrained(backbone: str | None) -> bool:
    """The builders' ``backbone`` option: None = the paper's from-scratch network, a name
    in ``TRUNKS`` = that pretrained trunk; anything else is a typo worth an error."""
    if backbone is not None and backbone not in TRUNKS:
        raise ValueError(f"unknown backbone {backbone!r}; choose from {sorted(TRUNKS)}")
    return backbone is not None


def pretrained_description(model: nn.Module) -> str | None:
    """What of ``model`` starts from pretrained weights, for its checkpoint and manifest:
    the source plus the architecture's own ``pretrained_part`` (None: all from scratch)."""
    trunk = next((m for m in model.modules() if isinstance(m, MobileNetV2Trunk)), None)
    if trunk is None:
        return None
    return f"{TRUNKS[trunk.backbone].source}: {getattr(model, 'pretrained_part', 'the trunk')}"


def pretrained_path(backbone: str = "mobilenet_v2") -> Path:
    """A trunk's weights file: under ``POSE_PRETRAINED_DIR`` or ../shared/pretrained."""
    return Path(os.environ.get("POSE_PRETRAINED_DIR", "../shared/pretrained")) / TRUNKS[backbone].file


def licence_path(backbone: str) -> Path:
    """The LICENSE file that sits beside a trunk's weights (anything shipped from them carries it)."""
    return pretrained_path(backbone).parent / "LICENSE"


def load_pretrained(trunk: MobileNetV2Trunk, path: Path | None = None) -> MobileNetV2Trunk:
    """Load the weights ``trunk`` is made for (the classifier and layer 18 are skipped)."""
    path = path or pretrained_path(trunk.backbone)
    if not path.exists():
        raise FileNotFoundError(f"no {trunk.backbone} MobileNetV2 weights at {path} "
                                "(set POSE_PRETRAINED_DIR)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = {k: v for k, v in state.items()
             if k.startswith("features.") and int(k.split(".")[1]) < len(trunk.features)}
    trunk.load_state_dict(state, strict=True)
    return trunk


class TopDownFeatures(nn.Module):
    """The trunk's four strides merged top-down into one stride-4 map of ``channels``.

    Why: the heatmap architectures (CPM's image features x', Tompson's convolutional bank)
    read features at 1/4 of the input, where MobileNetV2's stride-4 layer alone is shallow
    (24 channels, 3 blocks). As in a feature pyramid, each stride gets a 1×1 projection and
    the coarser map, nearest-upsampled, is added to it; a 3×3 convolution smooths the sum.
    The pretrained trunk supplies the semantics, the merge the resolution.
    """

    def __init__(self, channels: int, backbone: str = "mobilenet_v2") -> None:
        super().__init__()
        self.trunk = MobileNetV2Trunk(backbone)
        self.lateral = nn.ModuleDict({str(s): nn.Conv2d(c, channels, 1) for s, c in STAGE_CHANNELS.items()})
        self.smooth = _conv_bn_relu6(channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.trunk(x)
        y = self.lateral["32"](feats[32])
        for s in (16, 8, 4):
            y = self.lateral[str(s)](feats[s]) + nn.functional.interpolate(y, scale_factor=2.0, mode="nearest")
        return self.smooth(y)


class PretrainedRegressor(nn.Module):
    """MobileNetV2 → 1×1 projection → fully connected layers → ``outputs`` numbers.

    The holistic regressors' network (DeepPose's AlexNet, IEF's GoogLeNet in the papers:
    both ImageNet-pretrained) with the trunk's stride-32 features flattened, so the fully
    connected layers still see *where* things are, as the papers' did.

    ``extra_channels``: inputs besides the RGB image (IEF's K rendered heatmaps). They enter
    through their own zero-initialised convolution added to the first layer's output, which
    is exactly a first convolution widened with zero weights for the new channels (what the
    IEF paper did to GoogLeNet) while the pretrained state dict still loads key for key.
    """

    def __init__(self, input_size: int, outputs: int, fc: int = 512, extra_channels: int = 0,
                 dropout: float = 0.3, backbone: str = "mobilenet_v2") -> None:
        super().__init__()
        self.trunk = MobileNetV2Trunk(backbone)
        first = self.trunk.features[0][0]
        self.extra = None
        if extra_channels:
            self.extra = type(first)(extra_channels, first.out_channels, first.kernel_size,
                                     first.stride, first.padding, bias=False)
            nn.init.zeros_(self.extra.weight)
        side = input_size // 32
        self.head = nn.Sequential(_conv_bn_relu6(STAGE_CHANNELS[32], 128, 1), nn.Flatten(),
                                  nn.Linear(128 * side * side, fc), nn.ReLU(inplace=True),
                                  nn.Dropout(dropout), nn.Linear(fc, outputs))

    def forward(self, x: torch.Tensor, extra: torch.Tensor | None = None) -> torch.Tensor:
        conv, bn, act = self.trunk.features[0]
        h = conv(x)
        if self.extra is not None:
            h = h + self.extra(extra)
        return self.head(self.trunk.features[1:](act(bn(h))))
