"""Training: one loop for all five architectures, budgeted by wall-clock time (less the
time the run was paused from outside: ``models.run_clock``).

Why a time budget: on a shared 2-core machine the useful unit is minutes, not epochs.
The learning rate follows a cosine over the *elapsed fraction* of the budget, so a run
anneals properly whatever throughput it gets, and the elapsed time is checkpointed so a
killed run resumes where it stopped (``--resume`` is automatic when a checkpoint exists).

Losses as in each paper: coordinate L2 for DeepPose (every cascade stage), bounded-
correction L2 for IEF (every step), heatmap MSE with intermediate supervision on every
stage/stack for Tompson, CPM and the hourglass. Un-annotated joints are masked out.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.architectures import ARCHITECTURES, build_model
from models.architectures.registry import LossKind
from models.backbone import (PRETRAINED_MEAN, PRETRAINED_STD, TRUNKS, MobileNetV2Trunk, load_pretrained,
                             pretrained_description)
from models.checkpoint import (Checkpoint, at_input_size, grow_keypoints, load_checkpoint, run_checkpoint, widen,
                              save_checkpoint)
from models.data import CachedSplit, describe_cache, epoch_order, make_batch
from models.distill import Targets, Teacher
from models.run_clock import RunClock
from models.heatmaps import HEATMAP_SIGMA, render_gaussians
from models.inference import InferenceGraph
from models.keypoints import NUM_KEYPOINTS
from models.metrics import pck_summary
from models.transforms import IMAGENET_MEAN, IMAGENET_STD

RELEASED_WEIGHTS = Path(__file__).parent / "weights"
DEFAULT_INPUT_SIZE = 128  # a fresh model's crop size when --input-size is not given


def pose_loss(loss: LossKind, outputs: list[torch.Tensor], joints: torch.Tensor,
              valid: torch.Tensor, bound: float = 0.1, sigma: float = HEATMAP_SIGMA,
              teacher: Targets | None = None) -> torch.Tensor:
    """The paper's loss (see ``LossKind``), summed over stages (intermediate supervision).

    ``sigma``: the target Gaussians' width in heatmap cells. Narrow targets are precise but
    nearly all-zero, so early training sits on the "predict zeros" plateau (a 32×32 map
    with sigma 1 is ~0.3 % Gaussian mass); decoding (argmax + Taylor) works for any width.
    ``teacher``: a trained model's answers for the same batch (``models.distill``).
    """
    mask = valid.float()
    if teacher is not None:
        joints, mask = teacher.fill(joints, mask)
    if loss == "heatmap":
        h, w = outputs[0].shape[-2:]
        target = render_gaussians(joints, h, w, sigma)
        if teacher is not None:
            target = teacher.blend(target)
        per_joint = [((o - target) ** 2).mean((2, 3)) for o in outputs]
        return sum((p * mask).sum() / mask.sum().clamp(min=1) for p in per_joint) * 100
    if loss == "bounded_correction":  # IEF: each step regresses the bounded correction
        total = torch.zeros(())
        for prev, cur in zip(outputs[:-1], outputs[1:]):
            eps = cur - prev.detach()
            target = joints - prev.detach()
            norm = target.norm(dim=2, keepdim=True).clamp(min=1e-8)
            target = target * (bound / norm).clamp(max=1.0)
            total = total + (((eps - target) ** 2).sum(2) * mask).sum() / mask.sum().clamp(min=1)
        return total * 100
    return sum((((o - joints) ** 2).sum(2) * mask).sum() / mask.sum().clamp(min=1)
               for o in outputs) * 100


@torch.no_grad()
def evaluate_split(model: nn.Module, split: CachedSplit, size: int, mean: tuple[float, ...],
                   std: tuple[float, ...], batch: int = 64, sigma: float = HEATMAP_SIGMA) -> dict:
    """PCK@0.2 per stage on a cached split (centre crops, no augmentation), decoded as the
    release will decode (``sigma``: the targets' width)."""
    graph = InferenceGraph(model, sigma=sigma).eval()
    rng = np.random.default_rng(0)
    stages, gts, valids = [], [], []
    for start in range(0, len(split), batch):
        idx = np.arange(start, min(start + batch, len(split)))
        x, j, v = make_batch(split, idx, size, mean, std, augment=False, rng=rng)
        stages.append(graph(x)[1].numpy())
        gts.append(j.numpy())
        valids.append(v.numpy())
    stage_kp, gt, valid = np.concatenate(stages), np.concatenate(gts), np.concatenate(valids)
    return {"pck": [pck_summary(stage_kp[:, t], gt, valid)[0] for t in range(stage_kp.shape[1])]}


def parse_options(pairs: list[str]) -> dict[str, int | float | str]:
    """``["stacks=1", "depth=3"]`` → builder keyword arguments (numbers parsed as numbers)."""
    options: dict[str, int | float | str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"--arch-option wants KEY=VALUE, got {pair!r}")
        for kind in (int, float):
            try:
                options[key] = kind(value)
                break
            except ValueError:
                continue
        else:
            options[key] = value
    return options


def _start(args: argparse.Namespace, ckpt_path: Path) -> Checkpoint:
    """Resume ``ckpt_path``, else fine-tune from ``--init``, else a fresh (pretrained-trunk) model."""
    if ckpt_path.exists() and not args.restart:
        ckpt = load_checkpoint(ckpt_path)
        print(f"resumed {args.model} at epoch {ckpt.state['epoch']}, "
              f"{ckpt.state['elapsed'] / 60:.1f} min")
        return ckpt
    if args.init:
        ckpt = grow_keypoints(load_checkpoint(args.init), NUM_KEYPOINTS)
        if args.input_size:
            ckpt = at_input_size(ckpt, args.input_size)
        if args.width:
            ckpt = widen(ckpt, args.width)
        print(f"fine-tuning from {args.init} (its architecture options and normalisation, "
              f"{NUM_KEYPOINTS} joints, {ckpt.input_size} px, width {ckpt.config['arch'].get('width', 'default')})")
        ckpt.config = {**ckpt.config, "init": str(args.init)}
        ckpt.state, ckpt.optimizer = {"epoch": 0, "elapsed": 0.0, "step": 0}, None
        return ckpt
    options: dict = {"width": args.width} if args.width else {}
    options.update(parse_options(args.arch_option))
    options["num_keypoints"] = NUM_KEYPOINTS
    if args.backbone:
        options["backbone"] = args.backbone
    input_size = args.input_size or DEFAULT_INPUT_SIZE
    model = build_model(args.model, input_size=input_size, **options)
    for trunk in (m for m in model.modules() if isinstance(m, MobileNetV2Trunk)):
        load_pretrained(trunk)
        print(f"loaded the {trunk.backbone} MobileNetV2 weights into the trunk")
    mean, std = (PRETRAINED_MEAN, PRETRAINED_STD) if args.backbone else (IMAGENET_MEAN, IMAGENET_STD)
    config = {"model": args.model, "input_size": input_size, "width": args.width, "arch": options,
              "pretrained": pretrained_description(model)}
    return Checkpoint(model, config, mean, std, {"epoch": 0, "elapsed": 0.0, "step": 0})


def train(args: argparse.Namespace) -> Path:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    ckpt_path = run_checkpoint(args.out, args.model)
    out = ckpt_path.parent
    out.mkdir(parents=True, exist_ok=True)
    ckpt = _start(args, ckpt_path)
    model, mean, std, state = ckpt.model, ckpt.mean, ckpt.std, ckpt.state
    size = ckpt.input_size
    teacher = (Teacher(args.teacher, ckpt, args.distill, bf16=args.bf16, channels_last=args.channels_last)
               if args.teacher else None)
    ckpt.config.update(batch=args.batch, lr=args.lr, minutes=args.minutes, cache=str(args.cache),
                       bf16=args.bf16, sigma=args.sigma, data=describe_cache(args.cache),
                       half_body=args.half_body, occlusion=args.occlusion, aspect=args.aspect,
                       coco_share=args.coco_share, pose_jitter=args.pose_jitter,
                       redraw_pose_input=args.redraw_pose_input,
                       distilled_from=teacher.description if teacher else None)
    if args.pose_jitter:
        if not hasattr(model, "pose_jitter"):
            raise SystemExit(f"--pose-jitter: {args.model} is not fed its own pose (IEF is)")
        model.pose_jitter = args.pose_jitter
    if args.redraw_pose_input:
        if not hasattr(model, "redraw_pose_input"):
            raise SystemExit(f"--redraw-pose-input: {args.model} is not fed its own pose (IEF is)")
        if state["step"] == 0:  # not again when a run resumes
            model.redraw_pose_input(args.redraw_pose_input)
    loss_kind = ARCHITECTURES[args.model].loss
    train_split = CachedSplit(args.cache, "train")
    val_splits = {name: CachedSplit(args.cache, name) for name in ("val", "val_coco")
                  if CachedSplit.has(args.cache, name)}
    if hasattr(model, "mean_pose") and state["step"] == 0 and not args.init:
        centred = (train_split.joints - 0.5) / train_split.context + 0.5  # IEF's y_0
        m = train_split.valid[..., None]
        seen = m.sum(0)  # joints no training sample labels start at the centre
        mean_pose = np.where(seen > 0, (centred * m).sum(0) / np.maximum(seen, 1), 0.5)
        model.mean_pose.copy_(torch.from_numpy(mean_pose).float())
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    if ckpt.optimizer is not None:
        opt.load_state_dict(ckpt.optimizer)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    budget = args.minutes * 60
    rng = np.random.default_rng(args.seed + state["epoch"])
    log = (out / "metrics.jsonl").open("a")
    from tqdm import tqdm

    clock = RunClock(state["elapsed"])  # pauses (kill -STOP) are not charged to the budget
    while state["elapsed"] < budget and state["epoch"] < args.max_epochs:
        model.train()
        order = epoch_order(train_split, rng, args.coco_share)
        losses = []
        clock.restart()
        bar = tqdm(range(0, len(order) - args.batch + 1, args.batch), mininterval=30,
                   desc=f"{args.model} epoch {state['epoch'] + 1}")
        for start in bar:
            frac = min(clock.elapsed / budget, 1.0)
            warm = min(1.0, (state["step"] + 1) / 200)
            for g in opt.param_groups:
                g["lr"] = args.lr * warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))
            x, j, v = make_batch(train_split, order[start:start + args.batch], size, mean, std,
                                 augment=True, rng=rng, half_body=args.half_body, occlusion=args.occlusion,
                                 aspect=args.aspect)
            if args.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.bf16):
                outputs = model(x)
            loss = pose_loss(loss_kind, [o.float() for o in outputs], j, v,
                             bound=getattr(model, "bound", 0.1), sigma=args.sigma,
                             teacher=teacher(x) if teacher else None)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            state["step"] += 1
            clock.tick()
            if frac >= 1.0:
                break
        state["elapsed"] = clock.elapsed
        state["epoch"] += 1
        metrics = {"epoch": state["epoch"], "elapsed_min": round(state["elapsed"] / 60, 2),
                   "paused_min": round(clock.paused / 60, 2),
                   "train_loss": float(np.mean(losses)), "lr": opt.param_groups[0]["lr"],
                   **{f"{name}_pck_per_stage": evaluate_split(model, split, size, mean, std, sigma=args.sigma)["pck"]
                      for name, split in val_splits.items()}}
        log.write(json.dumps(metrics) + "\n")
        log.flush()
        print(json.dumps(metrics), flush=True)
        ckpt.model, ckpt.state, ckpt.optimizer = model, state, opt.state_dict()
        save_checkpoint(ckpt_path, ckpt)
    return ckpt_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, choices=sorted(ARCHITECTURES))
    p.add_argument("--cache", type=Path, default=Path("cache/lsp180.npz"),
                   help="crop cache from `poseserve cache` (built from POSE_DATA_DIR)")
    p.add_argument("--out", default="runs")
    p.add_argument("--input-size", type=int, default=None,
                   help=f"crop size in px; a fresh model: default {DEFAULT_INPUT_SIZE}; with --init: "
                        "default the weights' own, another size only for fully convolutional models")
    p.add_argument("--width", type=int, default=0,
                   help="0 = the builder's default; with --init: widen the released network to it "
                        "(function-preserving: new channels start silent)")
    p.add_argument("--arch-option", action="append", default=[], metavar="KEY=VALUE",
                   help="builder option for a fresh model, e.g. stacks=1 (repeatable)")
    p.add_argument("--sigma", type=float, default=HEATMAP_SIGMA,
                   help="heatmap target width in cells (heatmap losses)")
    p.add_argument("--backbone", choices=sorted(TRUNKS), default=None,
                   help="pretrained trunk (architectures that take one): mobilenet_v2 = ImageNet, "
                        "movenet = MoveNet Lightning's pose-trained trunk")
    p.add_argument("--init", type=Path, default=None,
                   help="fine-tune from these weights, e.g. models/weights/<id>.pt (the release)")
    p.add_argument("--half-body", type=float, default=0.0, metavar="P",
                   help="probability of a half-body crop (upper or lower body only), as a detector "
                        "frames a person the photo cuts off; 0 = off")
    p.add_argument("--occlusion", type=float, default=0.0, metavar="P",
                   help="probability of painting over a random 5-20%% of the crop; 0 = off")
    p.add_argument("--aspect", type=float, default=0.0, metavar="P",
                   help="probability of stretching a crop's width against its height (up to 4:3 either "
                        "way, area kept), as a photo resized to a square without keeping its aspect "
                        "shows people; 0 = off")
    p.add_argument("--teacher", type=Path, default=None,
                   help="distil from this heatmap model's weights (e.g. models/weights/hourglass.pt): "
                        "its heatmaps blended into the targets, its confident points for unlabelled joints")
    p.add_argument("--distill", type=float, default=0.5, metavar="ALPHA",
                   help="with --teacher: the teacher's share of the heatmap targets")
    p.add_argument("--coco-share", type=float, default=None, metavar="P",
                   help="share of each epoch drawn from coco_train's crops (default: as many as the "
                        "cache holds, about half); the epoch keeps its length")
    p.add_argument("--pose-jitter", type=float, default=0.0, metavar="STD",
                   help="IEF: Gaussian noise (in crop widths) on the starting pose while training, so "
                        "each correction must read the pose it is fed; 0 = off")
    p.add_argument("--redraw-pose-input", type=float, default=0.0, metavar="SCALE",
                   help="IEF: before the first step, re-draw the filters that read the pose maps at "
                        "SCALE x the spread of the image filters; 0 = keep them")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock training budget")
    p.add_argument("--max-epochs", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--bf16", action="store_true", help="bfloat16 autocast (AVX-512 BF16 CPUs)")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format")


def main(args: argparse.Namespace) -> None:
    print(train(args))
