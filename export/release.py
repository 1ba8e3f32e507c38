"""``poseserve release``: checkpoints → the shipped model directory, measured end to end.

1. export every architecture from ``runs/<id>/checkpoint.pt`` (parity-checked),
2. ``poseserve report``: evaluate each on the LSP test half, write the accuracy into its
   manifest and regenerate docs/accuracy.md with plots,
3. int8: quantize each, evaluate it, time it against fp32 in the same process, and keep
   the variant only where the PCK@0.2 drop is ≤ 2 points *and* it is faster; the
   decision table goes to docs/int8.md.
4. fp16 (for the CUDA provider): export the network in half precision, evaluate it, keep
   it where the drop is ≤ 1 point; docs/fp16.md.
"""
from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export.onnx_export import (
    export_checkpoint,
    export_model,
    load_checkpoint,
    write_manifest,
)
from export.quantize import calibration_crops, quantize_int8
from models.evaluate import accuracy_summary, evaluate

ARCHITECTURES = ("deeppose", "tompson", "cpm", "ief", "hourglass")
MAX_PCK_DROP = 0.02  # int8
MAX_FP16_DROP = 0.01


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


@dataclass
class VariantMeasurement:
    """A reduced-precision variant next to its float32 base, measured in one run."""

    manifest: dict  # the variant's manifest, with its measured accuracy filled in
    pck_fp32: float
    pck: float
    p50_fp32_s: float
    p50_s: float

    @property
    def drop(self) -> float:
        return self.pck_fp32 - self.pck

    def row(self, model_id: str, shipped: bool) -> str:
        return (f"| {model_id} | {self.pck_fp32:.3f} | {self.pck:.3f} | {100 * self.drop:+.1f} | "
                f"{self.p50_fp32_s * 1e3:.2f} | {self.p50_s * 1e3:.2f} | {self.p50_s / self.p50_fp32_s:.2f}× | "
                f"{'yes' if shipped else 'no'} |")


def measure_variant(fp32: Path, variant: Path, data: str | None, limit: int) -> VariantMeasurement:
    """PCK of the variant through the serving preprocessing, and both p50s timed alternately."""
    manifest = json.loads(fp32.with_suffix(".json").read_text())
    size = manifest["input"]["size"]
    result = evaluate(manifest["id"], data=data, onnx_path=variant, limit=limit)
    variant_manifest = json.loads(variant.with_suffix(".json").read_text())
    variant_manifest["accuracy"] = accuracy_summary(result)
    t32, tv = [], []
    for _ in range(3):  # interleaved so both see the same machine load
        t32.append(p50_latency(fp32, size))
        tv.append(p50_latency(variant, size))
    return VariantMeasurement(variant_manifest, manifest["accuracy"]["pck@0.2"], result["pck@0.2"],
                              float(np.median(t32)), float(np.median(tv)))


def decide(variant: Path, model_id: str, m: VariantMeasurement, ship: bool, rows: list[str]) -> None:
    """Keep the variant (its manifest now with its measured accuracy) or delete it; log the row."""
    if ship:
        write_manifest(variant.with_suffix(".json"), m.manifest)
    else:
        variant.unlink()
        variant.with_suffix(".json").unlink()
    rows.append(m.row(model_id, ship))
    print(rows[-1], flush=True)


TABLE_HEADER = [("| model | PCK@0.2 fp32 | PCK@0.2 {v} | drop (points) | CPU p50 fp32 ms | CPU p50 {v} ms "
                 "| {v} ÷ fp32 | shipped |"), "|---|---|---|---|---|---|---|---|"]


def release_int8(onnx_dir: Path, cache: Path, data: str | None, docs: Path, limit: int = 0) -> list[str]:
    rows = [line.format(v="int8") for line in TABLE_HEADER]
    for model_id in ARCHITECTURES:
        fp32 = onnx_dir / f"{model_id}.onnx"
        size = json.loads(fp32.with_suffix(".json").read_text())["input"]["size"]
        int8 = quantize_int8(fp32, calibration_crops(cache, size))
        m = measure_variant(fp32, int8, data, limit)
        ship = m.drop <= MAX_PCK_DROP and m.p50_s < m.p50_fp32_s
        m.manifest["int8_decision"] = {"pck_drop": round(m.drop, 4), "p50_ms_fp32": round(m.p50_fp32_s * 1e3, 3),
                                       "p50_ms_int8": round(m.p50_s * 1e3, 3), "shipped": ship}
        decide(int8, model_id, m, ship, rows)
    (docs / "int8.md").write_text(
        "# int8 variants\n\nMeasured by `poseserve release` (export/release.py) in one run: static QDQ "
        "quantization (per-channel int8 weights, uint8 activations) calibrated on 256 training crops; "
        "PCK@0.2 on the LSP test half through the serving preprocessing; p50 latency of batch 1 "
        "with one onnxruntime thread, fp32 and int8 timed alternately. Policy: ship int8 only where "
        "the PCK drop is ≤ 2 points and it is faster.\n\n" + "\n".join(rows) + "\n")
    return rows


def release_fp16(onnx_dir: Path, runs: Path, data: str | None, docs: Path, limit: int = 0) -> list[str]:
    """fp16 variants for the CUDA provider, exported from the checkpoints the fp32 graphs came from.

    Shipped where the PCK drop is ≤ 1 point. Their CPU latency is recorded but is no
    criterion: on CPU they are skipped by the registry (see ``export_model``).
    """
    rows = [line.format(v="fp16") for line in TABLE_HEADER]
    for model_id in ARCHITECTURES:
        fp32 = onnx_dir / f"{model_id}.onnx"
        flip_test = bool(json.loads(fp32.with_suffix(".json").read_text()).get("flip_test"))
        export_model(model_id, load_checkpoint(runs / model_id / "checkpoint.pt"), onnx_dir,
                     flip_test=flip_test, fp16=True)
        fp16 = onnx_dir / f"{model_id}-fp16.onnx"
        m = measure_variant(fp32, fp16, data, limit)
        decide(fp16, model_id, m, m.drop <= MAX_FP16_DROP, rows)
    (docs / "fp16.md").write_text(
        "# fp16 variants (for the CUDA provider)\n\nMeasured by `poseserve release` (export/release.py) "
        "in one run: the network exported in half precision from the same checkpoint as the fp32 "
        "graph (input, flip averaging and heatmap decoding stay float32); PCK@0.2 on the LSP test "
        "half through the serving preprocessing. Policy: ship where the PCK drop is ≤ 1 point.\n\n"
        "**Measured on CPU only** (no GPU was available): onnxruntime's CPU provider casts most fp16 "
        "kernels back to float32, so these PCKs capture the fp16 rounding of weights and of the "
        "values between fp16 and fp32 ops, and the CPU latency is *slower* than fp32 — which is why "
        "the registry serves fp16 variants only when the CUDA provider is active. How to measure "
        "on a GPU: docs/benchmarks.md.\n\n" + "\n".join(rows) + "\n")
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
    if not args.skip_fp16:
        release_fp16(args.onnx_dir, args.runs, args.data, args.docs, args.limit)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--onnx-dir", type=Path, default=Path("models/onnx"))
    p.add_argument("--cache", type=Path, default=Path("cache/lsp96.npz"))
    p.add_argument("--data", help="datasets folder (default: $POSE_DATA_DIR or ../shared/datasets)")
    p.add_argument("--docs", type=Path, default=Path("docs"))
    p.add_argument("--flip-test", action="store_true", help="export with test-time flip averaging")
    p.add_argument("--skip-int8", action="store_true")
    p.add_argument("--skip-fp16", action="store_true")
    p.add_argument("--limit", type=int, default=0, help="only the first N test images (smoke runs)")
