"""int8 variants: static QDQ quantization calibrated on real training crops.

``<id>.onnx`` → ``<id>-int8.onnx`` + ``<id>-int8.json``. The variant's manifest is the
fp32 one with its own sha256, ``variant: int8`` and — once ``poseserve eval`` has run on
it — its own measured accuracy; the service then serves it as ``model=<id>-int8``.
Calibration uses crops from the training split of the crop cache (never the test half).
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

from export.onnx_export import sha256_file, write_manifest


class CropReader:
    """Feeds normalised training crops to onnxruntime's calibrator, one batch of 1 at a time."""

    def __init__(self, crops: np.ndarray, manifest: dict) -> None:
        spec = manifest["input"]
        mean, std = np.asarray(spec["mean"], np.float32), np.asarray(spec["std"], np.float32)
        x = (crops.astype(np.float32) / 255.0 - mean) / std
        self.batches = iter(np.ascontiguousarray(x.transpose(0, 3, 1, 2))[:, None])

    def get_next(self) -> dict | None:
        batch = next(self.batches, None)
        return None if batch is None else {"image": batch}

    def rewind(self) -> None:  # part of the reader protocol; one pass is all we use
        pass


def calibration_crops(cache: Path, size: int, count: int = 256, seed: int = 0) -> np.ndarray:
    """``count`` centre crops from the cache's training split, resized to the model input."""
    import torch

    from models.data import CachedSplit, make_batch

    split = CachedSplit(cache, "train")
    idx = np.random.default_rng(seed).choice(len(split), size=min(count, len(split)), replace=False)
    x, _, _ = make_batch(split, np.sort(idx), size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), augment=False,
                         rng=np.random.default_rng(seed))
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def quantize_int8(onnx_path: Path, crops: np.ndarray) -> Path:
    """Write ``<id>-int8.onnx`` and its manifest next to ``onnx_path``; returns the new path."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    manifest = json.loads(onnx_path.with_suffix(".json").read_text())
    out = onnx_path.with_name(f"{onnx_path.stem}-int8.onnx")
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), CropReader(crops, manifest),
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax)
    variant = dict(manifest, id=f"{manifest['id']}-int8", onnx=out.name, sha256=sha256_file(out),
                   variant="int8", base_model=manifest["id"], accuracy=None,
                   quantization="static QDQ, per-channel int8 weights, uint8 activations, "
                                f"MinMax calibration on {len(crops)} LSP/LSPET training crops")
    variant.pop("parity_max_abs_error", None)
    write_manifest(out.with_suffix(".json"), variant)
    return out
