"""The five architectures, by id. Each module holds one architecture and its builder."""
from __future__ import annotations

from typing import Callable

from torch import nn

from models.architectures.cpm import cpm
from models.architectures.deeppose import deeppose
from models.architectures.hourglass import hourglass
from models.architectures.ief import ief
from models.architectures.tompson import tompson

BUILDERS: dict[str, Callable[..., nn.Module]] = {
    "deeppose": deeppose, "tompson": tompson, "cpm": cpm, "ief": ief, "hourglass": hourglass,
}
PAPERS: dict[str, str] = {
    "deeppose": "Toshev & Szegedy, DeepPose: Human Pose Estimation via Deep Neural Networks, CVPR 2014",
    "tompson": "Tompson et al., Joint Training of a Convolutional Network and a Graphical Model "
               "for Human Pose Estimation, NIPS 2014",
    "cpm": "Wei et al., Convolutional Pose Machines, CVPR 2016",
    "ief": "Carreira et al., Human Pose Estimation with Iterative Error Feedback, CVPR 2016",
    "hourglass": "Newell et al., Stacked Hourglass Networks for Human Pose Estimation, ECCV 2016",
}


def build_model(name: str, input_size: int = 96, **kwargs) -> nn.Module:
    """Build architecture ``name``; ``input_size`` is passed to those that need it."""
    if name not in BUILDERS:
        raise KeyError(f"unknown architecture {name!r}; choose from {sorted(BUILDERS)}")
    if name in ("deeppose", "cpm", "ief"):
        kwargs["input_size"] = input_size
    return BUILDERS[name](**kwargs)
