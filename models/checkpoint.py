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

from models.architectures import ARCHITECTURES, build_model
from models.heatmaps import HEATMAP_SIGMA
from models.keypoints import NUM_LSP_KEYPOINTS


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
    """The builder keyword arguments a checkpoint was trained with (older ones: width only;
    those without ``num_keypoints`` predate the face points and predict the 14 LSP joints)."""
    if config.get("arch") is not None:
        options = dict(config["arch"])
    else:
        options = {"width": config["width"]} if config.get("width") else {}
    options.setdefault("num_keypoints", NUM_LSP_KEYPOINTS)
    return options


def _grow_tensor(old: torch.Tensor, init: torch.Tensor, k_old: int, k: int, joints_start: int | None
                 ) -> torch.Tensor:
    """``old`` reshaped like ``init`` (its fresh counterpart with ``k`` joints).

    A grown input axis (any but the first) is laid out [before | joints | after]: zero
    slices are inserted after the old joints' block, which starts at ``joints_start``
    (default: the block ends the axis). A grown output axis (the first) keeps ``init``'s
    values beyond the old rows.
    """
    t = old
    for axis in range(1, old.dim()):
        if init.shape[axis] != old.shape[axis]:
            end = (old.shape[axis] - k_old if joints_start is None else joints_start) + k_old
            zeros = list(t.shape)
            zeros[axis] = k - k_old
            t = torch.cat([t.narrow(axis, 0, end), t.new_zeros(zeros), t.narrow(axis, end, t.shape[axis] - end)], axis)
    if t.shape == init.shape:
        return t
    if t.dim() != init.dim() or t.shape[1:] != init.shape[1:] or t.shape[0] > init.shape[0]:
        raise ValueError(f"{tuple(old.shape)} cannot grow into {tuple(init.shape)}")
    out = init.clone()
    out[:t.shape[0]] = t
    return out


def target_sigma(ckpt: Checkpoint) -> float:
    """The width (heatmap cells) of the Gaussians the weights were trained to predict; the
    "dark" decoding blurs with it. Checkpoints that do not record it used the default."""
    return float(ckpt.config.get("sigma") or HEATMAP_SIGMA)


def num_keypoints(ckpt: Checkpoint) -> int:
    """How many joints the checkpoint's network predicts (14: LSP only; 19: LSP-14 ∪ COCO-17)."""
    return int(ckpt.model.num_keypoints)


@torch.no_grad()
def grow_keypoints(ckpt: Checkpoint, k: int) -> Checkpoint:
    """The same network predicting ``k`` joints instead of its first ones (14 → 19).

    Every trained tensor is kept; a tensor that depends on the joint count grows along
    that axis: new *outputs* (a head's extra filters, a regressor's extra rows) keep the
    fresh model's initialisation; new *inputs* (heatmaps fed back into a later stack,
    IEF's rendered-heatmap channels) get zero weights. So the grown model's first joints
    are, before any training, exactly the old model's.
    """
    old_k = num_keypoints(ckpt)
    if k == old_k:
        return ckpt
    options = {**builder_options(ckpt.config), "num_keypoints": k}
    grown = build_model(ckpt.arch_id, input_size=ckpt.input_size, **options)
    start = getattr(grown, "belief_input_start", None)  # CPM: features, beliefs, centre map
    target = {name: _grow_tensor(old, grown.state_dict()[name], old_k, k, start)
              for name, old in ckpt.model.state_dict().items()}
    grown.load_state_dict(target)
    config = {**ckpt.config, "arch": options}
    return Checkpoint(grown.eval(), config, ckpt.mean, ckpt.std, dict(ckpt.state), None)


def _widen_tensor(old: torch.Tensor, init: torch.Tensor) -> torch.Tensor:
    """``old`` in the leading corner of ``init``'s shape: new output rows (axis 0) keep the
    fresh initialisation, new input columns (axis 1 of a weight) are zero."""
    if old.shape == init.shape:
        return old
    if old.dim() != init.dim() or any(o > n for o, n in zip(old.shape, init.shape)):
        raise ValueError(f"{tuple(old.shape)} cannot widen into {tuple(init.shape)}")
    out = init.clone()
    if out.dim() > 1:
        out[:, old.shape[1]:] = 0
    out[tuple(slice(0, n) for n in old.shape)] = old
    return out


@torch.no_grad()
def widen(ckpt: Checkpoint, width: int) -> Checkpoint:
    """The same trained network with ``width`` features where it had fewer (Net2Net's
    function-preserving growth, with zeros rather than copies).

    Every trained weight keeps its place; a new channel's filters start as the fresh
    model's, and every filter that reads a new channel reads it with zero weight, so the
    wider network computes, before any training, exactly what the narrower one did, and
    a fine-tune starts from the release's accuracy instead of from scratch. That holds
    where channels flow layer to layer (the hourglass; DeepPose and IEF, whose flattened
    maps keep the new channels last) and not where a widened block is concatenated with
    another (Tompson's two resolutions, CPM's features beside its beliefs): the new
    channels would land inside the old layout. It is checked on a random input; a
    network it does not hold for gets a ValueError.
    """
    options = {**builder_options(ckpt.config), "width": width}
    wide = build_model(ckpt.arch_id, input_size=ckpt.input_size, **options)
    old_state = ckpt.model.state_dict()
    if all(old_state[k].shape == v.shape for k, v in wide.state_dict().items()):
        return ckpt
    wide.load_state_dict({name: _widen_tensor(old_state[name], fresh)
                          for name, fresh in wide.state_dict().items()})
    x = torch.rand(1, 3, ckpt.input_size, ckpt.input_size, generator=torch.Generator().manual_seed(0))
    before, after = ckpt.model.eval()(x), wide.eval()(x)
    for b, a in zip(before, after):
        if not torch.allclose(b, a, atol=1e-4, rtol=1e-4):
            raise ValueError(f"{ckpt.arch_id} cannot be widened to {width} without changing what it computes")
    config = {**ckpt.config, "width": width, "arch": options}
    return Checkpoint(wide, config, ckpt.mean, ckpt.std, dict(ckpt.state), None)


@torch.no_grad()
def at_input_size(ckpt: Checkpoint, size: int) -> Checkpoint:
    """The same trained network, rebuilt for ``size`` px crops (to fine-tune at a new resolution).

    Only a fully convolutional network keeps every weight's shape (the hourglass, CPM,
    Tompson); a regressor whose fully connected layer reads the flattened feature map
    (DeepPose, IEF) does not, and gets a ValueError rather than a silently re-initialised layer.
    """
    if size == ckpt.input_size:
        return ckpt
    model = build_model(ckpt.arch_id, input_size=size, **builder_options(ckpt.config))
    try:
        model.load_state_dict(ckpt.model.state_dict())
    except RuntimeError as err:
        raise ValueError(f"{ckpt.arch_id} cannot change its input size from {ckpt.input_size} to {size} px: "
                         "some weights' shapes depend on it") from err
    return Checkpoint(model.eval(), {**ckpt.config, "input_size": size}, ckpt.mean, ckpt.std,
                      dict(ckpt.state), None)


def stage_count(ckpt: Checkpoint) -> int:
    """How many stages/stacks the network returns an estimate after."""
    x = torch.zeros(1, 3, ckpt.input_size, ckpt.input_size)
    with torch.no_grad():
        return len(ckpt.model.eval()(x))


@torch.no_grad()
def first_stages(ckpt: Checkpoint, stages: int) -> Checkpoint:
    """The same trained network ending after its first ``stages`` stages (an early exit).

    Where every stage is supervised (the hourglass's stacks, CPM's stages), the first
    ones are a complete network whose last output was trained to be the answer; when a
    later stage adds nothing measurable, serving can stop before it. Rebuilt with fewer
    stages from the builder's own option (``Architecture.stage_option``), every kept
    weight loaded, and checked on a random input to compute exactly the full network's
    first ``stages`` outputs; an architecture without such an option, or a count outside
    1 … its stages, gets a ValueError. The config keeps the count it was trained with
    (``trained_stages``), so a release can say what was cut.
    """
    option = ARCHITECTURES[ckpt.arch_id].stage_option
    if option is None:
        raise ValueError(f"{ckpt.arch_id} has no early exit: its stages are not a prefix of the network")
    x = torch.rand(1, 3, ckpt.input_size, ckpt.input_size, generator=torch.Generator().manual_seed(0))
    full = ckpt.model.eval()(x)  # counts the stages and is the reference the shorter network must match
    total = len(full)
    if not 1 <= stages <= total:
        raise ValueError(f"{ckpt.arch_id} has {total} stages; cannot end after {stages}")
    if stages == total:
        return ckpt
    options = {**builder_options(ckpt.config), option: stages}
    short = build_model(ckpt.arch_id, input_size=ckpt.input_size, **options)
    missing, _unused = short.load_state_dict(ckpt.model.state_dict(), strict=False)
    if missing:
        raise ValueError(f"{ckpt.arch_id} with {stages} stages needs weights the full network lacks: {missing[:3]}")
    ends = short.eval()(x)
    if len(ends) != stages or not all(torch.allclose(a, b, atol=1e-5) for a, b in zip(full, ends)):
        raise ValueError(f"{ckpt.arch_id}: the first {stages} stages alone do not compute what they do in the network")
    config = {**ckpt.config, "arch": options, "trained_stages": ckpt.config.get("trained_stages", total)}
    return Checkpoint(short, config, ckpt.mean, ckpt.std, dict(ckpt.state), None)


def run_checkpoint(runs: Path, model_id: str) -> Path:
    """Where ``poseserve train --out runs`` keeps a model's checkpoint (resumed, released)."""
    return Path(runs) / model_id / "checkpoint.pt"


def save_checkpoint(path: Path, ckpt: Checkpoint, with_optimizer: bool = True) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    config = {**ckpt.config, "arch": {**builder_options(ckpt.config), "num_keypoints": num_keypoints(ckpt)}}
    payload = {"model": ckpt.model.state_dict(), "config": config, "mean": list(ckpt.mean),
               "std": list(ckpt.std), "state": ckpt.state}
    if with_optimizer and ckpt.optimizer is not None:
        payload["optimizer"] = ckpt.optimizer
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # a run killed mid-save keeps its previous checkpoint
    return path


def read_state(path: Path) -> dict:
    """A checkpoint's training state (epoch, step, elapsed, ...) without reading its tensors
    into memory: the file is memory-mapped, so only the small pickled dict is read."""
    return torch.load(path, map_location="cpu", weights_only=False, mmap=True).get("state", {})


def load_checkpoint(path: Path) -> Checkpoint:
    """Rebuild the architecture a checkpoint was trained with and load its weights (eval mode)."""
    raw = torch.load(path, map_location="cpu", weights_only=False)
    cfg = raw["config"]
    model = build_model(cfg["model"], input_size=cfg["input_size"], **builder_options(cfg))
    model.load_state_dict(raw["model"])
    return Checkpoint(model.eval(), cfg, tuple(raw["mean"]), tuple(raw["std"]), raw.get("state", {}),
                      raw.get("optimizer"))
