"""Does IEF's corrector f read the pose it is fed, or only the image?

IEF's idea is the feedback: f sees the image ⊕ heatmaps of the current pose y_t and
returns the correction ε_t, so each step can correct what the last one got wrong. If f
ignores the maps, every call returns the same ε, the loop is one regression applied T
times, and extra steps overshoot. This script measures that on the hold-outs, without
training: PCK@0.2 after each correction (a) as the graph runs, (b) with the maps zeroed,
(c) unrolled to twice the trained steps; the mean cosine between ε_1 and each later ε; and
the mean |weight| of f's image and map input filters.

    python scripts/ief_feedback.py --checkpoint models/weights/ief.pt --cache cache/person272.npz

Run it on an idle machine (it competes with a trainer for the same cores).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.checkpoint import load_checkpoint  # noqa: E402
from models.data import CachedSplit, make_batch  # noqa: E402
from models.metrics import pck_summary  # noqa: E402


@torch.no_grad()
def unroll(model: torch.nn.Module, x: torch.Tensor, steps: int, zero_maps: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The model's own loop run for ``steps`` corrections (its maps zeroed on their way into
    f if asked), returning (y_{t+1}, ε_t) per step."""
    trained_steps, model.steps = model.steps, steps
    hook = (model.f.register_forward_pre_hook(lambda f, args: (args[0], torch.zeros_like(args[1])))
            if zero_maps else None)
    try:
        poses = model(x)
    finally:
        model.steps = trained_steps
        if hook is not None:
            hook.remove()
    return [(b, b - a) for a, b in zip(poses[:-1], poses[1:])]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--cache", type=Path, default=Path("cache/person272.npz"))
    p.add_argument("--crops", type=int, default=512, help="hold-out crops per split")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    model = ckpt.model.eval()
    image, pose = model.input_filters()
    report: dict = {"checkpoint": str(args.checkpoint),
                    "mean_abs_weight": {"image": image.abs().mean().item(), "maps": pose.abs().mean().item()}}
    for name in ("val_coco", "val"):
        split = CachedSplit(args.cache, name)
        idx = np.arange(min(len(split), args.crops))
        x, joints, valid = make_batch(split, idx, ckpt.input_size, ckpt.mean, ckpt.std, augment=False,
                                      rng=np.random.default_rng(0))
        for mode, steps, zero in (("as run", model.steps, False), ("maps zeroed", model.steps, True),
                                  ("2x steps", 2 * model.steps, False)):
            run = unroll(model, x, steps, zero)
            first = run[0][1].flatten(1)
            report[f"{name} {mode}"] = {
                "pck@0.2 per correction": [round(pck_summary(y.numpy(), joints.numpy(), valid.numpy())[0], 3)
                                           for y, _ in run],
                "cos(eps_1, eps_t)": [round(torch.nn.functional.cosine_similarity(first, e.flatten(1)).mean().item(), 3)
                                      for _, e in run[1:]]}
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
