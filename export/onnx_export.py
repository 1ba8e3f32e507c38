"""Checkpoint → ONNX graph + JSON manifest, with a parity check against PyTorch.

The manifest is the whole contract between training and serving: the service reads
nothing from the training code, only ``<id>.onnx`` and ``<id>.json``. It records how
to preprocess (input size, crop margin, mean/std), how to read the outputs (names,
shapes, heatmap stride or coordinate normalisation), what the joints are, and the
sha256 of the graph so a swapped or corrupted file is caught at load time.
"""
from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from models.architectures import PAPERS, build_model
from models.data import CROP_MARGIN
from models.inference import HEATMAP_STRIDE, InferenceGraph, output_names
from models.keypoints import FLIP_PERMUTATION, KEYPOINT_NAMES, SKELETON

OPSET = 17
PARITY_TOLERANCE = 1e-4
# fp16 graphs are compared with the float32 PyTorch model: the gap is half precision's own
# rounding (measured ≈ 5e-4 on heatmaps), not an export error, so the bar is wider.
FP16_PARITY_TOLERANCE = 1e-2


@dataclass
class Checkpoint:
    model: nn.Module
    config: dict
    mean: tuple[float, ...]
    std: tuple[float, ...]
    state: dict


def load_checkpoint(path: Path) -> Checkpoint:
    """Rebuild the architecture a checkpoint was trained with and load its weights."""
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    cfg = ckpt["config"]
    kwargs = {"width": cfg["width"]} if cfg.get("width") else {}
    model = build_model(cfg["model"], input_size=cfg["input_size"], **kwargs)
    model.load_state_dict(ckpt["model"])
    return Checkpoint(model.eval(), cfg, tuple(ckpt["mean"]), tuple(ckpt["std"]), ckpt["state"])


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


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
                fp16: bool = False) -> None:
    """Write the inference graph with a dynamic batch axis and named inputs/outputs.

    With ``fp16`` the network's weights and activations are half precision; input and
    outputs stay float32, so a client (and the service) cannot tell the difference.
    """
    names = output_names(model.output_kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(InferenceGraph(model, flip_test, fp16).eval(),
                          (torch.zeros(1, 3, input_size, input_size),), str(path),
                          input_names=["image"], output_names=names,
                          dynamic_axes={n: {0: "batch"} for n in ["image", *names]},
                          opset_version=OPSET, dynamo=False)


def check_parity(model: nn.Module, path: Path, input_size: int, batches: tuple[int, ...] = (1, 4),
                 seed: int = 0, flip_test: bool = False, min_agreement: float = 0.99) -> float:
    """Max abs difference between ONNX Runtime and PyTorch (float32) eval outputs.

    Continuous outputs (heatmaps, regressed coordinates) are compared directly. Decoded
    keypoints of heatmap models go through an argmax, where a near-tie can legitimately
    flip between cells; those must agree on ≥ ``min_agreement`` of joints.
    """
    import onnx
    import onnxruntime as ort

    onnx.checker.check_model(str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = output_names(model.output_kind)
    graph = InferenceGraph(model, flip_test).eval()
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
            if name in argmax_decoded:
                if (diff > 1e-3).mean() > 1 - min_agreement:
                    raise AssertionError(f"{name}: {100 * (diff > 1e-3).mean():.1f}% disagree")
            else:
                worst = max(worst, float(diff.max()))
    return worst


def build_manifest(model_id: str, ckpt: Checkpoint, onnx_path: Path, parity: float,
                   accuracy: dict | None = None, flip_test: bool = False) -> dict:
    model, size = ckpt.model, ckpt.config["input_size"]
    stride = getattr(model, "stride", HEATMAP_STRIDE)
    outputs = describe_outputs(model, size)
    return {
        "id": model_id,
        "architecture": type(model).__name__,
        "paper": PAPERS[ckpt.config["model"]],
        "onnx": onnx_path.name,
        "sha256": sha256_file(onnx_path),
        "opset": OPSET,
        "params": sum(p.numel() for p in model.parameters()),
        "flops": count_flops(model, size) * (2 if flip_test else 1),
        "flip_test": flip_test,
        "input": {"name": "image", "shape": ["batch", 3, size, size], "size": size,
                  "layout": "NCHW", "color": "RGB", "scale": "pixel / 255",
                  "mean": list(ckpt.mean), "std": list(ckpt.std),
                  "crop_margin": CROP_MARGIN,
                  "crop": "square of side crop_margin * max(w, h) centred on the person box"},
        "output_kind": model.output_kind,
        "heatmap_stride": stride,
        "heatmap_source": "predicted" if model.output_kind == "heatmaps" else "rendered",
        "coordinates": "normalised to the crop: (0,0) top-left corner, (1,1) bottom-right",
        "stages": outputs["stage_keypoints"]["shape"][1],
        "outputs": outputs,
        "keypoints": list(KEYPOINT_NAMES),
        "skeleton": [list(e) for e in SKELETON],
        "flip_permutation": list(FLIP_PERMUTATION),
        "parity_max_abs_error": parity,
        "training": {"data": "LSP im0001-im1000 + LSPET (last 300 held out for validation)",
                     **{k: ckpt.config[k] for k in ("width", "batch", "lr", "minutes", "cache") if k in ckpt.config},
                     "epochs": ckpt.state.get("epoch"),
                     "steps": ckpt.state.get("step"),
                     "train_minutes": round(ckpt.state.get("elapsed", 0) / 60, 1)},
        "accuracy": accuracy,
    }


def export_checkpoint(model_id: str, checkpoint: Path, out_dir: Path,
                      accuracy: dict | None = None, flip_test: bool = False) -> dict:
    """The ``poseserve export`` command: checkpoint → ``<id>.onnx`` + ``<id>.json``."""
    return export_model(model_id, load_checkpoint(checkpoint), out_dir, accuracy, flip_test)


def export_model(model_id: str, ckpt: Checkpoint, out_dir: Path, accuracy: dict | None = None,
                 flip_test: bool = False, fp16: bool = False) -> dict:
    """Export, check parity (raises above the tolerance), write the manifest.

    ``fp16`` writes ``<id>-fp16.onnx`` instead: the half-precision variant for the CUDA
    provider. Its manifest says ``requires_provider: CUDAExecutionProvider``, so a
    CPU-only server skips it: onnxruntime's CPU provider runs most fp16 kernels by casting
    back to float32, slower than the float32 graph, for nothing.
    """
    size = ckpt.config["input_size"]
    variant_id = f"{model_id}-fp16" if fp16 else model_id
    onnx_path = out_dir / f"{variant_id}.onnx"
    export_onnx(ckpt.model, onnx_path, size, flip_test, fp16)
    parity = check_parity(ckpt.model, onnx_path, size, flip_test=flip_test,
                          min_agreement=0.95 if fp16 else 0.99)
    if parity > (FP16_PARITY_TOLERANCE if fp16 else PARITY_TOLERANCE):
        raise AssertionError(f"{variant_id}: ONNX differs from PyTorch float32 by {parity:.2e}")
    manifest = build_manifest(model_id, ckpt, onnx_path, parity, accuracy, flip_test)
    if fp16:
        manifest.update(id=variant_id, variant="fp16", base_model=model_id,
                        precision="network in float16; input, flip averaging and decoding in float32",
                        requires_provider="CUDAExecutionProvider")
    write_manifest(out_dir / f"{variant_id}.json", manifest)
    return manifest


def write_manifest(path: Path, manifest: dict) -> None:
    path.write_text(json.dumps(manifest, indent=2) + "\n")
