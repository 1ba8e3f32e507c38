"""``poseserve profile-ops``: where a pose graph's inference time goes, operator by operator.

onnxruntime's own profiler records every node's kernel time; this runs a shipped graph with
the project's session options (``models.runtime``; one intra-op thread, as ``poseserve
bench`` times it) at
batch 1 and at a crowd's batch, and sums the kernel time by operator type (after graph
optimisation, so fused nodes show under their fused names), with each type's share and
per-person cost. Why: a graph far below the machine's matmul peak is usually paying for
something other than convolutions (layout conversions, upsampling, element-wise chains),
and this says which.
"""
from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from models.manifest import load_manifest
from models.runtime import create_session


def op_times(onnx_path: Path, size: int, batch: int, runs: int, threads: int = 1,
             warmup: int = 3) -> tuple[dict[str, float], int]:
    """Mean kernel µs per run by operator type, and the number of nodes that ran."""
    with tempfile.TemporaryDirectory() as tmp:
        session = create_session(onnx_path, threads, profile_prefix=str(Path(tmp) / "ops"))
        x = {session.get_inputs()[0].name: np.random.default_rng(0).normal(size=(batch, 3, size, size))
             .astype(np.float32)}
        for _ in range(warmup + runs):
            session.run(None, x)
        events = json.loads(Path(session.end_profiling()).read_text())
    kernel_runs = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    per_run = len(kernel_runs) // (warmup + runs)  # every run executes the same nodes
    per_type: dict[str, float] = collections.defaultdict(float)
    for e in kernel_runs[warmup * per_run:]:  # the warm-up runs (first allocations) left out
        per_type[e["args"]["op_name"]] += e["dur"] / runs
    return dict(per_type), len({e["name"] for e in kernel_runs})


def markdown(model: str, size: int, tables: dict[int, dict[str, float]], nodes: int, runs: int) -> str:
    types = sorted(tables[min(tables)], key=lambda t: -tables[min(tables)][t])
    batches = sorted(tables)
    total = {b: sum(tables[b].values()) for b in batches}
    head = "| operator | " + " | ".join(f"batch {b}: µs per person | share" for b in batches) + " |"
    rows = [f"| {t} | " + " | ".join(f"{tables[b].get(t, 0) / b:.0f} | {100 * tables[b].get(t, 0) / total[b]:.1f}%"
                                     for b in batches) + " |" for t in types]
    rows.append("| **all kernels** | " + " | ".join(f"**{total[b] / b:.0f}** | 100%" for b in batches) + " |")
    return f"""# Operators of the `{model}` graph ({dt.date.today().isoformat()})

`poseserve profile-ops --model {model}`: onnxruntime's profiler on the shipped graph
({size}×{size} input, the service's session options, one intra-op thread, {os.cpu_count()} cores),
kernel time summed by operator type over {runs} runs after warm-up ({nodes} nodes after
graph optimisation; fused nodes count under their fused type).

{head}
|---|{'---|---|' * len(batches)}
{chr(10).join(rows)}
"""


def main(args: argparse.Namespace) -> None:
    manifest_path = args.model_dir / f"{args.model}.json"
    m = load_manifest(manifest_path)
    size = m.input.size
    tables, nodes = {}, 0
    for batch in args.batches:
        tables[batch], nodes = op_times(m.onnx_path(manifest_path), size, batch, args.runs)
    text = markdown(args.model, size, tables, nodes, args.runs)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", type=Path, default=Path("models/onnx"))
    p.add_argument("--model", default="hourglass")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--out", default="", help="markdown report")
