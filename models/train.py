"""Training: one loop for all five architectures, budgeted by wall-clock time.

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
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.architectures import build_model
from models.data import CachedSplit, make_batch
from models.heatmaps import render_gaussians
from models.inference import InferenceGraph
from models.metrics import pck_summary

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
HEATMAP_SIGMA = 1.0  # in heatmap cells, as in Newell et al.


def pose_loss(model: nn.Module, outputs: list[torch.Tensor], joints: torch.Tensor,
              valid: torch.Tensor) -> torch.Tensor:
    """The paper's loss for ``model``, summed over stages (intermediate supervision)."""
    mask = valid.float()
    if model.output_kind == "heatmaps":
        h, w = outputs[0].shape[-2:]
        target = render_gaussians(joints, h, w, HEATMAP_SIGMA)
        per_joint = [((o - target) ** 2).mean((2, 3)) for o in outputs]
        return sum((p * mask).sum() / mask.sum().clamp(min=1) for p in per_joint) * 100
    if hasattr(model, "bound"):  # IEF: each step regresses the bounded correction
        loss = torch.zeros(())
        for prev, cur in zip(outputs[:-1], outputs[1:]):
            eps = cur - prev.detach()
            target = joints - prev.detach()
            norm = target.norm(dim=2, keepdim=True).clamp(min=1e-8)
            target = target * (model.bound / norm).clamp(max=1.0)
            loss = loss + (((eps - target) ** 2).sum(2) * mask).sum() / mask.sum().clamp(min=1)
        return loss * 100
    return sum((((o - joints) ** 2).sum(2) * mask).sum() / mask.sum().clamp(min=1)
               for o in outputs) * 100


@torch.no_grad()
def evaluate_split(model: nn.Module, split: CachedSplit, size: int, batch: int = 64) -> dict:
    """PCK@0.2 per stage on a cached split (centre crops, no augmentation)."""
    graph = InferenceGraph(model).eval()
    rng = np.random.default_rng(0)
    stages, gts, valids = [], [], []
    for start in range(0, len(split), batch):
        idx = np.arange(start, min(start + batch, len(split)))
        x, j, v = make_batch(split, idx, size, MEAN, STD, augment=False, rng=rng)
        stages.append(graph(x)[1].numpy())
        gts.append(j.numpy())
        valids.append(v.numpy())
    stage_kp, gt, valid = np.concatenate(stages), np.concatenate(gts), np.concatenate(valids)
    return {"pck": [pck_summary(stage_kp[:, t], gt, valid)[0] for t in range(stage_kp.shape[1])]}


def train(args: argparse.Namespace) -> Path:
    torch.manual_seed(args.seed)
    torch.set_num_threads(args.threads)
    out = Path(args.out) / args.model
    out.mkdir(parents=True, exist_ok=True)
    config = {"model": args.model, "input_size": args.input_size, "width": args.width,
              "batch": args.batch, "lr": args.lr, "minutes": args.minutes, "cache": str(args.cache)}
    kwargs = {"width": args.width} if args.width else {}
    model = build_model(args.model, input_size=args.input_size, **kwargs)
    train_split, val_split = CachedSplit(args.cache, "train"), CachedSplit(args.cache, "val")
    if hasattr(model, "mean_pose"):  # IEF starts from the mean training pose
        centred = (train_split.joints - 0.5) / train_split.context + 0.5
        m = train_split.valid[..., None]
        model.mean_pose.copy_(torch.from_numpy((centred * m).sum(0) / m.sum(0)).float())
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    ckpt_path = out / "checkpoint.pt"
    state = {"epoch": 0, "elapsed": 0.0, "step": 0}
    if ckpt_path.exists() and not args.restart:
        ckpt = torch.load(ckpt_path, weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        print(f"resumed {args.model} at epoch {state['epoch']}, {state['elapsed'] / 60:.1f} min")
    budget = args.minutes * 60
    rng = np.random.default_rng(args.seed + state["epoch"])
    log = (out / "metrics.jsonl").open("a")
    from tqdm import tqdm

    while state["elapsed"] < budget and state["epoch"] < args.max_epochs:
        model.train()
        order = rng.permutation(len(train_split))
        losses = []
        t0, start_elapsed = time.time(), state["elapsed"]
        bar = tqdm(range(0, len(order) - args.batch + 1, args.batch), mininterval=30,
                   desc=f"{args.model} epoch {state['epoch'] + 1}")
        for start in bar:
            frac = min((start_elapsed + time.time() - t0) / budget, 1.0)
            warm = min(1.0, (state["step"] + 1) / 200)
            for g in opt.param_groups:
                g["lr"] = args.lr * warm * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * frac)))
            x, j, v = make_batch(train_split, order[start:start + args.batch], args.input_size,
                                 MEAN, STD, augment=True, rng=rng)
            loss = pose_loss(model, model(x), j, v)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
            state["step"] += 1
            bar.set_postfix(loss=f"{np.mean(losses[-50:]):.4f}")
            if frac >= 1.0:
                break
        state["elapsed"] = start_elapsed + time.time() - t0
        state["epoch"] += 1
        metrics = {"epoch": state["epoch"], "elapsed_min": round(state["elapsed"] / 60, 2),
                   "train_loss": float(np.mean(losses)), "lr": opt.param_groups[0]["lr"],
                   "val_pck_per_stage": evaluate_split(model, val_split, args.input_size)["pck"]}
        log.write(json.dumps(metrics) + "\n")
        log.flush()
        print(json.dumps(metrics), flush=True)
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "state": state,
                    "config": config, "mean": MEAN, "std": STD}, ckpt_path)
    return ckpt_path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True)
    p.add_argument("--cache", type=Path, default=Path("cache/lsp96.npz"),
                   help="crop cache from `poseserve cache` (built from POSE_DATA_DIR)")
    p.add_argument("--out", default="runs")
    p.add_argument("--input-size", type=int, default=64)
    p.add_argument("--width", type=int, default=0, help="0 = the builder's default")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--minutes", type=float, default=60.0, help="wall-clock training budget")
    p.add_argument("--max-epochs", type=int, default=1000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    add_arguments(parser)
    train(parser.parse_args())
