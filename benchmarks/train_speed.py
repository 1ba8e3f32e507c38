"""``poseserve train-speed``: training throughput of one architecture under the CPU levers.

Times optimiser steps (forward, loss, backward, Adam) on random batches for fp32,
fp32 + channels_last and bf16 autocast + channels_last, interleaved so that all three
see the same machine load; prints img/s and the ratio to fp32. Architecture options as
``poseserve train`` takes them.
"""
from __future__ import annotations

import argparse
import statistics
import time


def add_arguments(p: argparse.ArgumentParser) -> None:
    from models.architectures import ARCHITECTURES

    p.add_argument("--model", required=True, choices=sorted(ARCHITECTURES))
    p.add_argument("--input-size", type=int, default=128)
    p.add_argument("--width", type=int, default=0)
    p.add_argument("--backbone", choices=("mobilenet_v2",), default=None)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=6, help="timed steps per variant and round")


def main(args: argparse.Namespace) -> None:
    import torch

    from models.architectures import ARCHITECTURES, build_model
    from models.keypoints import NUM_KEYPOINTS
    from models.train import pose_loss

    torch.set_num_threads(args.threads)
    options = {"width": args.width} if args.width else {}
    if args.backbone:
        options["backbone"] = args.backbone
    x = torch.randn(args.batch, 3, args.input_size, args.input_size)
    joints = torch.rand(args.batch, NUM_KEYPOINTS, 2) * 0.6 + 0.2
    valid = torch.ones(args.batch, NUM_KEYPOINTS, dtype=torch.bool)
    variants = {"fp32": (False, False), "fp32 + channels_last": (False, True), "bf16 + channels_last": (True, True)}
    setups = {}
    for name, (bf16, cl) in variants.items():
        torch.manual_seed(0)
        model = build_model(args.model, input_size=args.input_size, **options).train()
        if cl:
            model = model.to(memory_format=torch.channels_last)
        setups[name] = (model, torch.optim.Adam(model.parameters()), bf16,
                        x.contiguous(memory_format=torch.channels_last) if cl else x)
    loss_kind = ARCHITECTURES[args.model].loss
    times: dict[str, list[float]] = {name: [] for name in variants}
    for round_ in range(4):  # round 0 warms up
        for name, (model, opt, bf16, xx) in setups.items():
            for _ in range(args.steps):
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    out = model(xx)
                loss = pose_loss(loss_kind, [o.float() for o in out], joints, valid)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if round_:
                    times[name].append(time.perf_counter() - start)
    base = args.batch / statistics.median(times["fp32"])
    print(f"{args.model} {options} {args.input_size}px batch {args.batch}, {args.threads} threads")
    print("| variant | img/s | ÷ fp32 |\n|---|---|---|")
    for name, t in times.items():
        rate = args.batch / statistics.median(t)
        print(f"| {name} | {rate:.1f} | {rate / base:.2f}× |")
