"""The architecture registry: each architecture registers its builder once, here.

Why a registry: the CLI, training, export, the release, the report and the tests all
need "every architecture" and "this one's paper and loss"; reading them from one table
means a sixth architecture is one decorated builder, not five edits.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from torch import nn

# heatmap: MSE against rendered Gaussians on every stage (Tompson, CPM, hourglass);
# coordinates: L2 on the (x, y) of every stage (DeepPose);
# bounded_correction: L2 on each step's correction, capped at the model's bound (IEF).
LossKind = Literal["heatmap", "coordinates", "bounded_correction"]
Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class Architecture:
    id: str
    builder: Builder  # builder(input_size: int, **options) -> nn.Module
    paper: str
    loss: LossKind
    # The builder option that counts the stages/stacks each returning an estimate, where a
    # network built with fewer of them computes exactly the first ones (``first_stages``);
    # None where later stages change earlier ones or share no such option.
    stage_option: str | None = None


ARCHITECTURES: dict[str, Architecture] = {}


def register(arch_id: str, paper: str, loss: LossKind, stage_option: str | None = None
             ) -> Callable[[Builder], Builder]:
    """Decorator: ``@register("cpm", paper=..., loss="heatmap", stage_option="stages")`` on the builder."""

    def wrap(builder: Builder) -> Builder:
        if arch_id in ARCHITECTURES:
            raise ValueError(f"architecture {arch_id!r} registered twice")
        ARCHITECTURES[arch_id] = Architecture(arch_id, builder, paper, loss, stage_option)
        return builder

    return wrap


def build_model(arch_id: str, input_size: int = 128, **options) -> nn.Module:
    """Build architecture ``arch_id`` for square inputs of ``input_size`` pixels."""
    if arch_id not in ARCHITECTURES:
        raise KeyError(f"unknown architecture {arch_id!r}; choose from {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch_id].builder(input_size=input_size, **options)
