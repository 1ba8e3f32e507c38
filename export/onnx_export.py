"""Checkpoint → ONNX graph + JSON manifest, with a parity check against PyTorch.

The manifest is the whole contract between training and serving: the service reads
nothing from the training code, only ``<id>.onnx`` and ``<id>.json``. It records how
to preprocess (input size, crop margin, mean/std), how to read the outputs (names,
shapes, heatmap stride or coordinate normalisation), what the joints are, and the
sha256 of the graph so a swapped or corrupted file is caught at load time.
"""
from __future__ import annotations

import argparse
import math
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.architectures import ARCHITECTURES
from models.backbone import TRUNKS, licence_path, pretrained_description
from models.checkpoint import (Checkpoint, first_stages, load_checkpoint, num_keypoints, run_checkpoint,
                               target_sigma)
from models.heatmaps import HEATMAP_SIGMA, HEATMAP_STRIDE
from models.inference import InferenceGraph, output_names
from models.keypoints import JointSet
from models.manifest import HeatmapDecoding, InputSpec, PoseManifest, sha256_file
from models.runtime import create_session
from models.transforms import CROP_MARGIN

OPSET = 17
PARITY_TOLERANCE = 1e-4
# fp16 graphs are compared with the float32 PyTorch model: the gap is half precision's own
# rounding (measured ≈ 5e-4 on heatmaps), not an export error, so the bar is wider.
FP16_PARITY_TOLERANCE = 1e-2
SHIPPED_DIR = Path(__file__).resolve().parent.parent / "models" / "onnx"


def count_flops(model: nn.Module, input_size: int) -> int:
    """Forward FLOPs at batch 1 (a multiply-add counts as 2), from PyTorch's counter."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model.eval()(torch.zeros(1, 3, input_size, input_size))
    return int(counter.get_total_flops())


def describe_outputs(model: nn.Module, input_size: int) -> dict[str, dict]:
    """Shapes and meaning of each named output, for the manifest."""
    with torch.no_grad():
        outs = InferenceGraph(model).eval()(torch.zeros(1, 3, input_size, input_size))
    meaning = {
        "keypoints": "final estimate; x, y normalised to the crop, [0, 1] spans the crop",
        "stage_keypoints": "estimate after every stage/stack/iteration, same units",
        "scores": "decoded heatmap peak value per joint (confidence)",
        "heatmaps": ("last stage's heatmaps" if model.output_kind == "heatmaps" else
                     "Gaussians rendered at the regressed keypoints (the model predicts no maps)")
                    + "; cell (row i, col j) centre = ((j+0.5)/W, (i+0.5)/H) in crop units",
        "stage_heatmaps": "every stage's heatmaps",
    }
    return {name: {"shape": ["batch", *out.shape[1:]], "description": meaning[name]}
            for name, out in zip(output_names(model.output_kind), outs)}


def export_onnx(model: nn.Module, path: Path, input_size: int, flip_test: bool = False,
                fp16: bool = False, sigma: float = HEATMAP_SIGMA) -> None:
    """Write the inference graph with a dynamic batch axis and named inputs/outputs;
    heatmaps decoded by "dark" with the training targets' ``sigma``.

    With ``fp16`` the network's weights and activations are half precision; input and
    outputs stay float32, so a client (and the service) cannot tell the difference.
    """
    names = output_names(model.output_kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(InferenceGraph(model, flip_test, fp16, sigma=sigma).eval(),
                          (torch.zeros(1, 3, input_size, input_size),), str(path),
                          input_names=["image"], output_names=names,
                          dynamic_axes={n: {0: "batch"} for n in ["image", *names]},
                          opset_version=OPSET, dynamo=False)


def check_parity(model: nn.Module, path: Path, input_size: int, batches: tuple[int, ...] = (1, 4),
                 seed: int = 0, flip_test: bool = False, min_agreement: float = 0.99,
                 decoded_tolerance: float = 1e-3, refine: str = "dark", sigma: float = HEATMAP_SIGMA) -> float:
    """Max abs difference between ONNX Runtime and PyTorch (float32) eval outputs.

    Continuous outputs (heatmaps, regressed coordinates) are compared directly. Decoded
    keypoints of heatmap models go through an argmax, where a near-tie can legitimately
    flip between cells; those must agree within ``decoded_tolerance`` (crop units) on
    ≥ ``min_agreement`` of joints. fp16 graphs get a quarter of a heatmap cell: their
    heatmaps differ slightly everywhere, and the sub-pixel refinement turns that into
    small continuous shifts, not just argmax flips.
    """
    import onnx

    onnx.checker.check_model(str(path))
    session = create_session(path)
    names = output_names(model.output_kind)
    graph = InferenceGraph(model, flip_test, refine=refine, sigma=sigma).eval()
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for n in batches:
        x = torch.randn(n, 3, input_size, input_size, generator=gen)
        with torch.no_grad():
            expected = dict(zip(names, (t.numpy() for t in graph(x))))
        got = dict(zip(names, session.run(None, {"image": x.numpy()})))
        for name in names:
            if expected[name].shape != got[name].shape:
                raise AssertionError(f"{name}: shape {got[name].shape} != {expected[name].shape}")
        argmax_decoded = ({"keypoints", "stage_keypoints", "scores"}
                          if model.output_kind == "heatmaps" else set())
        for name in names:
            diff = np.abs(expected[name] - got[name])
            if name == "heatmaps" and model.output_kind == "coordinates":
                # Gaussians rendered at the regressed points: a point moved by d (crop units)
                # changes a value by up to d · (side / sigma) · e^-1/2, the Gaussian's steepest
                # slope, so the maps are held to the points' tolerance in the points' units.
                diff = diff / (diff.shape[-1] / HEATMAP_SIGMA * math.exp(-0.5))
            if name in argmax_decoded:
                if (diff > decoded_tolerance).mean() > 1 - min_agreement:
                    raise AssertionError(f"{name}: {100 * (diff > decoded_tolerance).mean():.1f}% disagree")
            else:
                worst = max(worst, float(diff.max()))
    return worst


def build_manifest(ckpt: Checkpoint, onnx_path: Path, parity: float, flip_test: bool = False) -> PoseManifest:
    """The manifest of a fresh export; ``accuracy`` stays empty until ``export.report`` measures it."""
    model, size = ckpt.model, ckpt.input_size
    outputs = describe_outputs(model, size)
    joints = JointSet(num_keypoints(ckpt))
    return PoseManifest(
        id=ckpt.arch_id, architecture=type(model).__name__, paper=ARCHITECTURES[ckpt.arch_id].paper,
        onnx=onnx_path.name, sha256=sha256_file(onnx_path), opset=OPSET,
        params=sum(p.numel() for p in model.parameters()),
        flops=count_flops(model, size) * (2 if flip_test else 1), flip_test=flip_test,
        input=InputSpec(shape=["batch", 3, size, size], size=size, mean=ckpt.mean, std=ckpt.std,
                        crop_margin=CROP_MARGIN),
        output_kind=model.output_kind, heatmap_stride=getattr(model, "stride", HEATMAP_STRIDE),
        heatmap_source="predicted" if model.output_kind == "heatmaps" else "rendered",
        coordinates="normalised to the crop: (0,0) top-left corner, (1,1) bottom-right",
        stages=outputs["stage_keypoints"]["shape"][1], outputs=outputs,
        keypoints=list(joints.names), skeleton=[tuple(e) for e in joints.skeleton],
        flip_permutation=list(joints.flip_permutation), pretrained=pretrained_description(model),
        decoding=HeatmapDecoding(refine="dark", sigma=target_sigma(ckpt)) if model.output_kind == "heatmaps" else None,
        parity_max_abs_error=parity,
        training={"data": ckpt.config.get("data", "LSP im0001-im1000 + LSPET (last 300 held out for validation)"),
                  **{k: ckpt.config[k] for k in ("arch", "input_size", "batch", "lr", "minutes", "bf16",
                                                 "cache", "init", "distilled_from", "coco_share", "trained_stages")
                     if ckpt.config.get(k) is not None},
                  "epochs": ckpt.state.get("epoch"), "steps": ckpt.state.get("step"),
                  "train_minutes": round(ckpt.state.get("elapsed", 0) / 60, 1)})


def ship_trunk_licence(manifest: PoseManifest, out_dir: Path) -> PoseManifest:
    """Copy the licence of the pretrained trunk a model derives from (named by its manifest's
    ``pretrained``) beside its ONNX file as ``<backbone>.LICENSE`` and name it in
    ``licence_file``: weights derived from Apache-2.0 files must carry their licence."""
    backbone = next((name for name, t in TRUNKS.items() if (manifest.pretrained or "").startswith(t.source)), None)
    if backbone is None:
        return manifest
    source = licence_path(backbone)
    if not source.exists():
        raise FileNotFoundError(f"{source}: the licence of the {backbone} trunk must ship with the model")
    manifest.licence_file = f"{backbone}.LICENSE"
    shutil.copyfile(source, out_dir / manifest.licence_file)
    return manifest


class ParityError(AssertionError):
    """The exported graph does not compute what the PyTorch model does (within tolerance)."""


def export_model(ckpt: Checkpoint, out_dir: Path, flip_test: bool = False, fp16: bool = False) -> PoseManifest:
    """Export, check parity (raises above the tolerance), write ``<id>.onnx`` + ``<id>.json``.

    ``fp16`` writes ``<id>-fp16.onnx`` instead: the half-precision variant for the CUDA
    provider. Its manifest says ``requires_provider: CUDAExecutionProvider``, so a
    CPU-only server skips it: onnxruntime's CPU provider runs most fp16 kernels by casting
    back to float32, slower than the float32 graph, for nothing.
    """
    size = ckpt.input_size
    name = f"{ckpt.arch_id}-fp16" if fp16 else ckpt.arch_id
    onnx_path = out_dir / f"{name}.onnx"
    # Written beside its final name and moved there only once parity holds: a graph that
    # fails leaves the one already in ``out_dir`` (the shipped one, in a release) untouched.
    staged = out_dir / f".{name}.onnx.partial"
    sigma = target_sigma(ckpt)  # the graph's decoding and the parity check's reference alike
    try:
        export_onnx(ckpt.model, staged, size, flip_test, fp16, sigma=sigma)
        # fp16 on random-noise inputs flips near-tie argmaxes often (without the flip's averaging,
        # a fifth of them): only its continuous outputs are held to a tolerance here, and the
        # release measures its real PCK drop on photos, which is what decides whether it ships.
        try:
            parity = check_parity(ckpt.model, staged, size, flip_test=flip_test, min_agreement=0.0 if fp16 else 0.99,
                                  sigma=sigma,
                                  decoded_tolerance=0.25 * HEATMAP_STRIDE / size if fp16 else 1e-3)
        except AssertionError as exc:
            raise ParityError(f"{name}: {exc}") from None
        if parity > (FP16_PARITY_TOLERANCE if fp16 else PARITY_TOLERANCE):
            raise ParityError(f"{name}: ONNX differs from PyTorch float32 by {parity:.2e}")
        os.replace(staged, onnx_path)
    finally:
        staged.unlink(missing_ok=True)
    manifest = build_manifest(ckpt, onnx_path, parity, flip_test)
    ship_trunk_licence(manifest, out_dir)
    if fp16:
        manifest = manifest.variant_of(
            "fp16", onnx_path, precision="network in float16; input, flip averaging and decoding in float32",
            requires_provider="CUDAExecutionProvider")
    manifest.save(out_dir / f"{name}.json")
    return manifest


def refuse_shipped(out_dir: Path, force: bool) -> None:
    """A newcomer's ``export --out models/onnx`` must not silently replace a released model."""
    if out_dir.resolve() == SHIPPED_DIR and not force:
        raise SystemExit(f"refusing to write into the shipped model directory {out_dir}: "
                         "`poseserve release` does that with measured accuracy; pass --force to override")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, choices=(*ARCHITECTURES, "all"))
    p.add_argument("--checkpoint", type=Path, help="default runs/<model>/checkpoint.pt")
    p.add_argument("--out", type=Path, default=Path("runs/export"),
                   help="output folder (default runs/export; models/onnx needs --force)")
    p.add_argument("--flip-test", action="store_true",
                   help="average with the mirrored image's prediction (2x the compute)")
    p.add_argument("--stages", type=int, default=0,
                   help="end the graph after this many stages/stacks (an early exit: hourglass, CPM); "
                        "0 = all")
    p.add_argument("--force", action="store_true", help="allow writing into models/onnx")


def main(args: argparse.Namespace) -> None:
    """``poseserve export``: checkpoint → ONNX + manifest, with a parity check."""
    refuse_shipped(args.out, args.force)
    for arch_id in (ARCHITECTURES if args.model == "all" else (args.model,)):
        checkpoint = args.checkpoint or run_checkpoint(Path("runs"), arch_id)
        ckpt = load_checkpoint(checkpoint)
        m = export_model(first_stages(ckpt, args.stages) if args.stages else ckpt, args.out, flip_test=args.flip_test)
        print(f"{arch_id}: {args.out / m.onnx} params={m.params} parity={m.parity_max_abs_error:.2e}")
