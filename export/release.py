"""``poseserve release``: checkpoints → the shipped model directory, measured end to end.

1. export each architecture (``--models``, default all) from ``runs/<id>/checkpoint.pt``,
   or from its released weights ``models/weights/<id>.pt`` when no run exists
   (parity-checked), and release the weights themselves (without optimiser state) so
   later runs can resume or fine-tune from them (``poseserve train --init``),
2. ``poseserve report``: evaluate every shipped model on the LSP test half and coco_dev,
   write the accuracy into its manifest and regenerate docs/accuracy.md with plots,
3. early exit (staged heatmap models: the hourglass's stacks, CPM's stages): where an
   earlier stage of the full network is within ``MAX_EXIT_DROP`` of the last on LSP and on
   coco_dev, export the network ending there, time both, and serve the shorter graph when
   it is faster (measured again by the report); the decision goes into the manifest's
   ``early_exit`` and docs/early_exit.md. The released weights stay the full network.
4. int8: quantize each, evaluate it, time it against fp32 in the same process, and keep
   the variant only where the PCK@0.2 drop is ≤ 2 points *and* it is faster; the
   decision table goes to docs/int8.md.
5. fp16 (for the CUDA provider): export the network in half precision, evaluate it, keep
   it where the drop is ≤ 1 point; docs/fp16.md.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from export import report
from export.onnx_export import SHIPPED_DIR, ParityError, export_model, ship_trunk_licence
from export.quantize import CALIBRATION_CROPS, calibration_crops, holdout_crops, quantize_int8
from models.architectures import ARCHITECTURES
from models.checkpoint import Checkpoint, first_stages, load_checkpoint, run_checkpoint, save_checkpoint
from models.evaluate import evaluate, evaluate_coco
from models.manifest import EarlyExit, PoseManifest, load_manifest
from models.runtime import create_session
from models.train import RELEASED_WEIGHTS

MAX_PCK_DROP = 0.02  # int8
MAX_FP16_DROP = 0.01
# An earlier exit may cost at most half a point of PCK@0.2 on each evaluation set: the
# margin within which the service already prefers a faster int8 graph by default.
MAX_EXIT_DROP = 0.005


def p50_latency(path: Path, size: int, runs: int = 200) -> float:
    session = create_session(path, threads=1)
    x = {"image": np.random.default_rng(0).normal(size=(1, 3, size, size)).astype(np.float32)}
    for _ in range(10):
        session.run(None, x)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, x)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def interleaved_p50(first: Path, second: Path, size: int, rounds: int = 3) -> tuple[float, float]:
    """Both graphs' p50 (seconds), timed alternately so both see the same machine load."""
    a, b = [], []
    for _ in range(rounds):
        a.append(p50_latency(first, size))
        b.append(p50_latency(second, size))
    return float(np.median(a)), float(np.median(b))


@dataclass
class VariantMeasurement:
    """A reduced-precision variant next to its float32 base, measured in one run."""

    result: dict  # the variant's evaluation (its manifest gets it through report.record_accuracy)
    pck_fp32: float
    pck: float
    p50_fp32_s: float
    p50_s: float
    coco: dict | None = None  # its coco_dev evaluation, where coco_dev is present

    @property
    def drop(self) -> float:
        return self.pck_fp32 - self.pck

    def row(self, model_id: str, shipped: bool) -> str:
        return (f"| {model_id} | {self.pck_fp32:.3f} | {self.pck:.3f} | {100 * self.drop:+.1f} | "
                f"{self.p50_fp32_s * 1e3:.2f} | {self.p50_s * 1e3:.2f} | {self.p50_s / self.p50_fp32_s:.2f}× | "
                f"{'yes' if shipped else 'no'} |")


def measure_variant(fp32: Path, variant: Path, data: str | None, limit: int) -> VariantMeasurement:
    """PCK of the variant through the serving preprocessing (LSP decides; coco_dev recorded
    beside it where present, so the variant has its point on the accuracy-latency plot),
    and both p50s timed alternately."""
    manifest = load_manifest(fp32.with_suffix(".json"))
    size = manifest.input.size
    result = evaluate(manifest.id, data=data, onnx_path=variant, limit=limit)
    coco = None
    if not limit:
        try:
            coco = evaluate_coco(manifest.id, data=data, onnx_path=variant)
        except FileNotFoundError:  # no coco_dev beside the data: LSP only
            pass
    return VariantMeasurement(result, manifest.accuracy["pck@0.2"], result["pck@0.2"],
                              *interleaved_p50(fp32, variant, size), coco)


def decide(variant: Path, model_id: str, m: VariantMeasurement, ship: bool, rows: list[str],
           decision: dict | None = None) -> None:
    """Keep the variant (its manifest now with its measured accuracy) or delete it; log the row."""
    if ship:
        manifest = report.record_accuracy(variant.with_suffix(".json"), m.result, m.coco)
        if decision is not None:
            manifest.int8_decision = decision
            manifest.save(variant.with_suffix(".json"))
    else:
        variant.unlink()
        variant.with_suffix(".json").unlink()
    rows.append(m.row(model_id, ship))
    print(rows[-1], flush=True)


TABLE_HEADER = [("| model | PCK@0.2 fp32 | PCK@0.2 {v} | drop (points) | CPU p50 fp32 ms | CPU p50 {v} ms "
                 "| {v} ÷ fp32 | shipped |"), "|---|---|---|---|---|---|---|---|"]


def kept_rows(doc: Path, models: list[str]) -> list[str]:
    """The decision rows of models not re-released now, from the previous ``doc``, so a
    partial release (``--models``) does not erase the others' measured decisions."""
    if not doc.exists():
        return []
    return [line for line in doc.read_text().splitlines()
            if line.startswith("| ") and line.split("|")[1].strip() in ARCHITECTURES
            and line.split("|")[1].strip() not in models]


def release_int8(onnx_dir: Path, cache: Path, data: str | None, docs: Path, models: list[str],
                 limit: int = 0) -> list[str]:
    rows = [line.format(v="int8") for line in TABLE_HEADER] + kept_rows(docs / "int8.md", models)
    for model_id in models:
        fp32 = onnx_dir / f"{model_id}.onnx"
        size = load_manifest(fp32.with_suffix(".json")).input.size
        int8 = quantize_int8(fp32, calibration_crops(cache, size), holdout_crops(cache, size))
        m = measure_variant(fp32, int8, data, limit)
        ship = m.drop <= MAX_PCK_DROP and m.p50_s < m.p50_fp32_s
        decide(int8, model_id, m, ship, rows, {"pck_drop": round(m.drop, 4), "p50_ms_fp32": round(m.p50_fp32_s * 1e3, 3),
                                               "p50_ms_int8": round(m.p50_s * 1e3, 3), "shipped": ship})
    (docs / "int8.md").write_text(
        "# int8 variants\n\nMeasured by `poseserve release` (export/release.py) in one run: static QDQ "
        "quantization of the network (per-channel int8 weights, uint8 activations; the first layer, the "
        f"output layers and the decoding stay float32) calibrated on {CALIBRATION_CROPS} training crops "
        "(activation ranges from the extremes over the crops or their per-crop moving average, "
        "whichever keeps the keypoints closer to float32's on the held-out crops: the manifest's "
        "`quantization` field says which and by how much); "
        "PCK@0.2 on the LSP test half through the serving preprocessing; p50 latency of batch 1 "
        "with one onnxruntime thread, fp32 and int8 timed alternately. Policy: ship int8 only where "
        "the PCK drop is ≤ 2 points and it is faster.\n\n" + "\n".join(rows) + "\n")
    return rows


def release_fp16(onnx_dir: Path, data: str | None, docs: Path, models: list[str], runs: Path,
                 limit: int = 0) -> list[str]:
    """fp16 variants for the CUDA provider, exported from the checkpoints the fp32 graphs came from.

    Shipped where the PCK drop is ≤ 1 point. Their CPU latency is recorded but is no
    criterion: on CPU they are skipped by the registry (see ``export_model``).
    """
    rows = [line.format(v="fp16") for line in TABLE_HEADER] + kept_rows(docs / "fp16.md", models)
    for model_id in models:
        fp32 = onnx_dir / f"{model_id}.onnx"
        flip_test = load_manifest(fp32.with_suffix(".json")).flip_test
        fp16 = onnx_dir / f"{model_id}-fp16.onnx"
        try:
            export_model(served_checkpoint(model_id, runs, onnx_dir), onnx_dir, flip_test=flip_test, fp16=True)
        except ParityError as error:  # not shipped; the release goes on with the others
            fp16.unlink(missing_ok=True)
            rows.append(f"| {model_id} | – | – | – | – | – | – | no: {error} |")
            print(rows[-1], flush=True)
            continue
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


def ship_licences(onnx_dir: Path) -> None:
    """Every pose manifest in ``onnx_dir`` (variants and models not re-exported included)
    gets its pretrained trunk's licence beside it."""
    for path in sorted(onnx_dir.glob("*.json")):
        manifest = load_manifest(path)
        if isinstance(manifest, PoseManifest) and manifest.pretrained:
            ship_trunk_licence(manifest, onnx_dir).save(path)


def checkpoint_for(model_id: str, runs: Path) -> Path:
    """The run's checkpoint when there is one, else the released weights."""
    run = run_checkpoint(runs, model_id)
    return run if run.exists() else RELEASED_WEIGHTS / f"{model_id}.pt"


def served_checkpoint(model_id: str, runs: Path, onnx_dir: Path) -> Checkpoint:
    """The network the shipped float32 graph computes: the checkpoint, ending where the
    manifest's ``early_exit`` says (variants are built from it, so they end there too)."""
    ckpt = load_checkpoint(checkpoint_for(model_id, runs))
    manifest = load_manifest(onnx_dir / f"{model_id}.json")
    return first_stages(ckpt, manifest.early_exit.stage) if manifest.early_exit else ckpt


def exit_stage(per_stage: list[list[float]], max_drop: float = MAX_EXIT_DROP) -> int:
    """The earliest stage (1-based) whose PCK is within ``max_drop`` of the last stage's on
    every evaluation set (``per_stage``: one list per set, one value per stage)."""
    stages = len(per_stage[0])
    return next(k for k in range(1, stages + 1) if all(s[k - 1] >= s[-1] - max_drop for s in per_stage))


EXIT_HEADER = ["| model | stages | LSP PCK@0.2 per stage | coco_dev PCK@0.2 per stage | served | "
               "CPU p50 full ms | CPU p50 served ms | served ÷ full |", "|---|---|---|---|---|---|---|---|"]


def exit_row(model_id: str, d: EarlyExit) -> str:
    per = [" → ".join(f"{v:.3f}" for v in s) if s else "–" for s in (d.lsp_per_stage, d.coco_dev_per_stage)]
    times = ((f"{d.p50_ms_full:.2f}", f"{d.p50_ms_exit:.2f}", f"{d.p50_ms_exit / d.p50_ms_full:.2f}×")
             if d.p50_ms_full and d.p50_ms_exit else ("–", "–", "–"))
    return f"| {model_id} | {d.of} | {per[0]} | {per[1]} | {d.stage} of {d.of} | " + " | ".join(times) + " |"


def release_early_exit(args: argparse.Namespace, models: list[str]) -> list[str]:
    """Step 3: end each staged model's served graph at the earliest stage that costs at
    most ``MAX_EXIT_DROP`` on LSP and coco_dev (measured on the full graph by step 2), when
    that graph is faster; the report measures the graphs that changed."""
    rows = EXIT_HEADER + kept_rows(args.docs / "early_exit.md", models)
    exited = []
    for model_id in models:
        if ARCHITECTURES[model_id].stage_option is None:
            continue
        path = args.onnx_dir / f"{model_id}.json"
        manifest = load_manifest(path)
        lsp = manifest.accuracy["per_stage_pck@0.2"]
        coco = (manifest.accuracy.get("coco_dev") or {}).get("per_stage_pck@0.2")
        decision = EarlyExit(stage=len(lsp), of=len(lsp), max_drop=MAX_EXIT_DROP, lsp_per_stage=lsp,
                             coco_dev_per_stage=coco)
        k = exit_stage([s for s in (lsp, coco) if s])
        if k < len(lsp):
            short = first_stages(load_checkpoint(checkpoint_for(model_id, args.runs)), k)
            with tempfile.TemporaryDirectory() as tmp:
                staged = export_model(short, Path(tmp), flip_test=manifest.flip_test)  # parity-checked
                full_s, exit_s = interleaved_p50(args.onnx_dir / manifest.onnx, Path(tmp) / staged.onnx,
                                                 manifest.input.size)
                decision.p50_ms_full, decision.p50_ms_exit = round(full_s * 1e3, 3), round(exit_s * 1e3, 3)
                if exit_s < full_s:  # the graph just timed is the one served (its manifest saved below)
                    shutil.move(Path(tmp) / staged.onnx, args.onnx_dir / staged.onnx)
                    manifest = staged
                    decision.stage = k
                    exited.append(model_id)
        manifest.early_exit = decision
        manifest.save(path)
        rows.append(exit_row(model_id, decision))
        print(rows[-1], flush=True)
    (args.docs / "early_exit.md").write_text(
        "# Early exit: where each staged model's served graph ends\n\nDecided by `poseserve release` "
        "(export/release.py) in one run: every stage of the hourglass and of CPM is supervised in training, "
        "so the first stages alone are a complete network whose last output was trained to be the answer. "
        "The full network is measured stage by stage (PCK@0.2 on the LSP test half and on coco_dev, through "
        "the serving preprocessing); the served graph ends at the earliest stage within "
        f"{100 * MAX_EXIT_DROP:.1f} points of the last stage on both, when that graph is faster (CPU p50 of "
        "batch 1 with one onnxruntime thread, both graphs timed alternately). The released weights "
        "(`models/weights/`) stay the full network; `poseserve export --stages N` writes any prefix.\n\n"
        + "\n".join(rows) + "\n")
    if exited:  # the served graphs changed: measure them (their int8/fp16 variants follow from them)
        report.main(argparse.Namespace(onnx_dir=args.onnx_dir, runs=args.runs, data=args.data, out=args.docs,
                                       limit=args.limit, models=exited))
    return rows


def main(args: argparse.Namespace) -> None:
    models = args.models or list(ARCHITECTURES)
    if not args.variants_only:
        release_fp32(args, models)
        release_early_exit(args, models)
    if not args.skip_int8:
        release_int8(args.onnx_dir, args.cache, args.data, args.docs, models, args.limit)
    if not args.skip_fp16:
        release_fp16(args.onnx_dir, args.data, args.docs, models, args.runs, args.limit)
    ship_licences(args.onnx_dir)


def release_fp32(args: argparse.Namespace, models: list[str]) -> None:
    """Steps 1 and 2: export, release the weights, evaluate, regenerate the accuracy page."""
    for model_id in models:
        ckpt = load_checkpoint(checkpoint_for(model_id, args.runs))
        export_model(ckpt, args.onnx_dir, flip_test=args.flip_test)  # raises before anything is replaced
        if args.onnx_dir.resolve() == SHIPPED_DIR:
            save_checkpoint(RELEASED_WEIGHTS / f"{model_id}.pt", ckpt, with_optimizer=False)
        for variant in ("int8", "fp16"):  # stale until re-decided below
            for suffix in (".onnx", ".json"):
                (args.onnx_dir / f"{model_id}-{variant}{suffix}").unlink(missing_ok=True)
    report.main(argparse.Namespace(onnx_dir=args.onnx_dir, runs=args.runs, data=args.data, out=args.docs,
                                   limit=args.limit, models=models))


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", nargs="+", choices=sorted(ARCHITECTURES),
                   help="architectures to (re)release; default all")
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--onnx-dir", type=Path, default=SHIPPED_DIR)
    p.add_argument("--cache", type=Path, default=Path("cache/lsp180.npz"))
    p.add_argument("--data", help="datasets folder (default: $POSE_DATA_DIR or ../shared/datasets)")
    p.add_argument("--docs", type=Path, default=Path("docs"))
    p.add_argument("--flip-test", action="store_true",
                   help="bake the test-time flip into the graphs (by default the service applies it per "
                        "request, flip=true, and the report measures both)")
    p.add_argument("--variants-only", action="store_true",
                   help="keep the shipped float32 graphs and their accuracy; only re-decide the int8 "
                        "(and fp16) variants, e.g. after a change to the quantization recipe")
    p.add_argument("--skip-int8", action="store_true")
    p.add_argument("--skip-fp16", action="store_true")
    p.add_argument("--limit", type=int, default=0, help="only the first N test images (smoke runs)")
