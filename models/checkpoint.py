"""The checkpoint format: written by training, read by training (resume), evaluation,
export and fine-tuning. One owner, next to the training loop.

A checkpoint holds the weights, the builder options needed to rebuild the exact
architecture (``config["arch"]``), the input normalisation the weights expect, and the
training state. ``optimizer`` is optional: released weights (``models/weights/``) drop
it to stay small, and a run resumed from them starts a fresh optimiser.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models.architectures import build_model


@dataclass
class Checkpoint:
    model: nn.Module
    config: dict[str, Any]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    state: dict[str, Any] = field(default_factory=dict)
    optimizer: dict[str, Any] | None = None

    @property
    def arch_id(self) -> str:
        return self.config["model"]

    @property
    def input_size(self) -> int:
        return int(self.config["input_size"])


def builder_options(config: dict[str, Any]) -> dict[str, Any]:
    """The builder keyword arguments a checkpoint was trained with (older ones: width only)."""
    if config.get("arch") is not None:
        return dict(config["arch"])
    return {"width": config["width"]} if config.get("width") else {}


def save_checkpoint(path: Path, ckpt: Checkpoint, with_optimizer: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"model": ckpt.model.state_dict(), "config": ckpt.config, "mean": list(ckpt.mean),
               "std": list(ckpt.std), "state": ckpt.state}
    if with_optimizer and ckpt.optimizer is not None:
        payload["optimizer"] = ckpt.optimizer
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # a run killed mid-save keeps its previous checkpoint
    return path


def load_checkpoint(path: Path) -> Checkpoint:
    """Rebuild the architecture a checkpoint was trained with and load its weights (eval mode)."""
    raw = torch.load(path, map_location="cpu", weights_only=False)
    cfg = raw["config"]
    model = build_model(cfg["model"], input_size=cfg["input_size"], **builder_options(cfg))
    model.load_state_dict(raw["model"])
    return Checkpoint(model.eval(), cfg, tuple(raw["mean"]), tuple(raw["std"]), raw.get("state", {}),
                      raw.get("optimizer"))
