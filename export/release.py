"""``poseserve release``: checkpoints → the shipped model directory, measured end to end.

1. export every architecture from ``runs/<id>/checkpoint.pt`` (parity-checked),
2. ``poseserve report``: evaluate each on the LSP test half, write the accuracy into its
   manifest and regenerate docs/accuracy.md with plots,
3. int8: quantize each, evaluate it, time it against fp32 in the same process, and keep
   the variant only where the PCK@0.2 drop is ≤ 2 points *and* it is faster; the
   decision table goes to docs/int8.md.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from export.onnx_export import export_checkpoint, write_manifest
from export.quantize import calibration_crops, quantize_int8
from models.evaluate import evaluate

ARCHITECTURES = ("deeppose", "tompson", "cpm", "ief", "hourglass")
MAX_PCK_DROP = 0.02


def p50_latency(path: Path, size: int, runs: int = 200) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    x = {"image": np.random.default_rng(0).normal(size=(1, 3, size, size)).astype(np.float32)}
    for _ in range(10):
        session.run(None, x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, x)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def release_int8(onnx_dir: Path, cache: Path, data: str | None, docs: Path, limit: int = 0) -> list[str]:
    rows = ["| model | PCK@0.2 fp32 | PCK@0.2 int8 | drop (points) | p50 fp32 ms | p50 int8 ms | int8 ÷ fp32 | shipped |",
            "|---|---|---|---|---|---|---|---|"]
    for model_id in ARCHITECTURES:
        fp32 = onnx_dir / f"{model_id}.onnx"
        manifest = json.loads(fp32.with_suffix(".json").read_text())
        size = manifest["input"]["size"]
        int8 = quantize_int8(fp32, calibration_crops(cache, size))
        result = evaluate(model_id, data=data, onnx_path=int8, limit=limit)
        variant = json.loads(int8.with_suffix(".json").read_text())
        variant["accuracy"] = {k: result[k] for k in ("dataset", "pck@0.2", "pck@0.1",
                                                     "per_joint_pck@0.2", "per_stage_pck@0.2")}
        # interleave the timings so both see the same machine load
        t32, t8 = [], []
        for _ in range(3):
            t32.append(p50_latency(fp32, size))
            t8.append(p50_latency(int8, size))
        lat32, lat8 = float(np.median(t32)), float(np.median(t8))
        base = manifest["accuracy"]["pck@0.2"]
        drop = base - result["pck@0.2"]
        ship = drop <= MAX_PCK_DROP and lat8 < lat32
        variant["int8_decision"] = {"pck_drop": round(drop, 4), "p50_ms_fp32": round(lat32 * 1e3, 3),
                                    "p50_ms_int8": round(lat8 * 1e3, 3), "shipped": ship}
        if ship:
            write_manifest(int8.with_suffix(".json"), variant)
        else:
            int8.unlink()
            int8.with_suffix(".json").unlink()
        rows.append(f"| {model_id} | {base:.3f} | {result['pck@0.2']:.3f} | {100 * drop:+.1f} | "
                    f"{lat32 * 1e3:.2f} | {lat8 * 1e3:.2f} | {lat8 / lat32:.2f}× | {'yes' if ship else 'no'} |")
        print(rows[-1], flush=True)
    (docs / "int8.md").write_text(
        "# int8 variants\n\nMeasured by `poseserve release` (export/release.py) in one run: static QDQ "
        "quantization (per-channel int8 weights, uint8 activations) calibrated on 256 training crops; "
        "PCK@0.2 on the LSP test half through the serving preprocessing; p50 latency of batch 1 "
        "with one onnxruntime thread, fp32 and int8 timed alternately. Policy: ship int8 only where "
        "the PCK drop is ≤ 2 points and it is faster.\n\n" + "\n".join(rows) + "\n")
    return rows


def main(args: argparse.Namespace) -> None:
    from models import report

    for model_id in ARCHITECTURES:
        export_checkpoint(model_id, args.runs / model_id / "checkpoint.pt", args.onnx_dir,
                          flip_test=args.flip_test)
    report.main(argparse.Namespace(onnx_dir=args.onnx_dir, runs=args.runs, data=args.data, out=args.docs,
                                   limit=args.limit))
    if not args.skip_int8:
        release_int8(args.onnx_dir, args.cache, args.data, args.docs, args.limit)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--onnx-dir", type=Path, default=Path("models/onnx"))
    p.add_argument("--cache", type=Path, default=Path("cache/lsp96.npz"))
    p.add_argument("--data", help="datasets folder (default: $POSE_DATA_DIR or ../shared/datasets)")
    p.add_argument("--docs", type=Path, default=Path("docs"))
    p.add_argument("--flip-test", action="store_true", help="export with test-time flip averaging")
    p.add_argument("--skip-int8", action="store_true")
    p.add_argument("--limit", type=int, default=0, help="only the first N test images (smoke runs)")
