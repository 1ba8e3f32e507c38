"""Does IEF lose accuracy at a later correction because its BatchNorm statistics are shared?

IEF runs one network f T times, each time on the image ⊕ the heatmaps of a different pose
(the first always the mean pose). Training keeps one set of BatchNorm running statistics
for all T calls, so at inference each call is normalised with a mixture of the T input
distributions. This script measures whether that matters, without training: it
re-estimates the statistics from the same training crops (a) once over all T calls and
(b) once per call, and scores the hold-outs per correction with each (the trainer's own
``evaluate_split``). If (b) beats (a), per-step statistics are worth a training run.

    python scripts/ief_step_statistics.py --checkpoint runs/ief1/ief/checkpoint.pt \
        --cache cache/person272.npz

Run it on an idle machine (it competes with a trainer for the same cores).
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from models.checkpoint import load_checkpoint  # noqa: E402
from models.data import CachedSplit, make_batch  # noqa: E402
from models.train import evaluate_split  # noqa: E402

Stats = list[tuple[torch.Tensor, torch.Tensor]]


class StepStatistics:
    """Hooks on IEF's f that know which of the T calls is running (calls cycle 0..T-1 per
    forward) and either load that call's BatchNorm statistics or estimate them."""

    def __init__(self, model: nn.Module) -> None:
        self.model, self.call = model, 0
        self.norms = [m for m in model.f.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        self.per_call: list[Stats] | None = None
        self.estimating: int | None = None  # the call whose statistics are being estimated
        model.f.register_forward_pre_hook(self._before)

    def _before(self, module: nn.Module, args: tuple) -> None:
        step, self.call = self.call, (self.call + 1) % self.model.steps
        if self.per_call is not None:
            self.load(self.per_call[step])
        if self.estimating is not None:
            for norm in self.norms:
                norm.train(self.estimating in (step, -1))

    def snapshot(self) -> Stats:
        return [(n.running_mean.clone(), n.running_var.clone()) for n in self.norms]

    def load(self, stats: Stats) -> None:
        for norm, (mean, var) in zip(self.norms, stats):
            norm.running_mean.copy_(mean)
            norm.running_var.copy_(var)

    @torch.no_grad()
    def estimate(self, split: CachedSplit, count: int, size: int, mean, std, step: int,
                 batch: int = 64) -> Stats:
        """Cumulative-average statistics of call ``step`` (-1: all calls) over ``count``
        augmented training crops, as training sees them."""
        self.per_call, self.estimating = None, step
        for norm in self.norms:
            norm.reset_running_stats()
            norm.momentum = None  # a plain average over the batches, not an EMA
        rng = np.random.default_rng(1)
        index = rng.choice(len(split), count, replace=False)
        self.model.eval()
        for start in range(0, count, batch):
            x, _, _ = make_batch(split, index[start:start + batch], size, mean, std, augment=True, rng=rng)
            self.call = 0
            self.model(x)
        self.estimating = None
        for norm in self.norms:
            norm.eval()
            norm.momentum = 0.1
        return self.snapshot()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--cache", type=Path, required=True)
    p.add_argument("--crops", type=int, default=1024, help="training crops per estimate")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = load_checkpoint(args.checkpoint)
    model, size, mean, std = ckpt.model.float().eval(), ckpt.input_size, ckpt.mean, ckpt.std
    hooks = StepStatistics(model)
    holdouts = {name: CachedSplit(args.cache, name) for name in ("val", "val_coco")
                if CachedSplit.has(args.cache, name)}

    def score(per_call: list[Stats] | None) -> dict:
        hooks.per_call = per_call
        result = {}
        for name, split in holdouts.items():
            hooks.call = 0
            result[name] = [round(v, 4) for v in evaluate_split(model, split, size, mean, std)["pck"]]
        return result

    train = CachedSplit(args.cache, "train")
    trained = hooks.snapshot()
    results = {"trained (running averages, shared)": score([trained] * model.steps)}
    shared = hooks.estimate(train, args.crops, size, mean, std, step=-1)
    results["re-estimated, shared"] = score([shared] * model.steps)
    per_call = [hooks.estimate(train, args.crops, size, mean, std, step=t) for t in range(model.steps)]
    results["re-estimated, per correction"] = score(per_call)
    last, first = per_call[-1], per_call[0]
    results["mean |mean_last - mean_first| / std_first"] = float(np.mean(
        [((a[0] - b[0]).abs() / (b[1].sqrt() + 1e-5)).mean().item() for a, b in zip(last, first)]))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
