"""int8 variants: static QDQ quantization calibrated on real training crops.

``<id>.onnx`` → ``<id>-int8.onnx`` + ``<id>-int8.json``. The variant's manifest is the
fp32 one with its own sha256, ``variant: int8`` and — once ``poseserve eval`` has run on
it — its own measured accuracy; the service then serves it as ``model=<id>-int8``.
Calibration uses crops from the training split of the crop cache (never the test half).

Only the network is quantized (``float_nodes``): the decoding after it (peak search,
sub-cell refinement, coordinate arithmetic), the first convolution (it reads the image)
and the layers whose outputs leave the network stay float32. Quantizing the decoding too
rounded every coordinate to one of 256 levels and ran the index arithmetic through
quantize/dequantize pairs. Measured by ``poseserve release`` against the previous recipe
(everything quantized, 256 crops): the LSP PCK@0.2 drop fell from 0.9 to 0.5 points for
the hourglass and from 0.7 to 0.4 for CPM, at about the same speed-up (docs/int8.md).

Two ways to set each activation's range are tried (``CALIBRATIONS``) and the variant
whose keypoints stay closest to the float32 graph's on held-out crops (the cache's
validation splits, never the test photos) is kept. The extremes over all crops let one
unusual crop stretch a range and coarsen the steps for every other; the moving average of
the per-crop ranges follows the typical crop but clips the rare large activation. Measured
with the LSP test PCK@0.2 drop (``poseserve release``): moving average 0.2 points for the
hourglass (extremes 0.5) but 5.2 for DeepPose (extremes 0.1), so neither suits all five.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import onnx

from models.manifest import PoseManifest, load_manifest
from models.transforms import normalise


class CropReader:
    """Feeds normalised training crops to onnxruntime's calibrator, one batch of 1 at a time."""

    def __init__(self, crops: np.ndarray, manifest: PoseManifest) -> None:
        self.batches = iter(normalise(crops, manifest.input.mean, manifest.input.std)[:, None])

    def get_next(self) -> dict | None:
        batch = next(self.batches, None)
        return None if batch is None else {"image": batch}

    def rewind(self) -> None:  # part of the reader protocol; one pass is all we use
        pass


CALIBRATION_CROPS = 1024


def float_nodes(graph: onnx.GraphProto) -> list[str]:
    """Names of the nodes quantization must leave in float32.

    The exported graph wraps the network as ``model`` (``models.inference.InferenceGraph``),
    so its nodes are named ``/model/...``; everything else decodes the network's outputs.
    Kept float: that decoding, the convolution(s) reading the input image, and the network
    nodes whose outputs are graph outputs or are read by the decoding (the heatmap and
    coordinate layers: their precision is the answer's precision).
    """
    inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    decoding = [n for n in graph.node if not n.name.startswith("/model/")]
    read_by_decoding = {i for n in decoding for i in n.input}
    keep = [n.name for n in decoding]
    keep += [n.name for n in graph.node if n.name.startswith("/model/") and
             (inputs & set(n.input) or (outputs | read_by_decoding) & set(n.output))]
    return keep


def calibration_crops(cache: Path, size: int, count: int = CALIBRATION_CROPS, seed: int = 0,
                      split: str = "train") -> np.ndarray:
    """``count`` centre crops from one split of the cache, resized to the model input."""
    import torch

    from models.data import CachedSplit, make_batch

    crops = CachedSplit(cache, split)
    idx = np.random.default_rng(seed).choice(len(crops), size=min(count, len(crops)), replace=False)
    x, _, _ = make_batch(crops, np.sort(idx), size, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), augment=False,
                         rng=np.random.default_rng(seed))
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def holdout_crops(cache: Path, size: int) -> np.ndarray:
    """Every crop of the cache's validation splits (LSPET's and coco_train's held-out ends):
    what chooses the calibration, unseen by training and by the calibration itself."""
    from models.data import CachedSplit

    splits = [s for s in ("val", "val_coco") if CachedSplit.has(cache, s)]
    return np.concatenate([calibration_crops(cache, size, 10 ** 6, split=s) for s in splits])


# onnxruntime MinMax calibrator options: how a tensor's range is taken over the crops.
CALIBRATIONS: dict[str, dict] = {
    "extremes": {},  # the lowest and highest value any crop produced
    "moving-average": {"CalibMovingAverage": True},  # per-crop ranges averaged (constant 0.01)
}


def quantize_network(src: Path, out: Path, reader, calibration: str = "moving-average") -> None:
    """Static QDQ quantization of ``src``'s network (``float_nodes`` stay float32) into ``out``,
    activation ranges calibrated (``CALIBRATIONS[calibration]``) on what ``reader`` feeds."""
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(src), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(out), reader,
                        quant_format=QuantFormat.QDQ, activation_type=QuantType.QUInt8,
                        weight_type=QuantType.QInt8, per_channel=True,
                        calibrate_method=CalibrationMethod.MinMax,
                        nodes_to_exclude=float_nodes(onnx.load(str(prepared)).graph),
                        extra_options=CALIBRATIONS[calibration])


def keypoints(path: Path, x: np.ndarray, batch: int = 32) -> np.ndarray:
    """The graph at ``path``'s keypoints on the inputs ``x``, in batches."""
    from models.runtime import create_session

    session = create_session(path)
    return np.concatenate([session.run(["keypoints"], {"image": x[start:start + batch]})[0]
                           for start in range(0, len(x), batch)])


def disagreement(reference: np.ndarray, candidate: Path, x: np.ndarray) -> float:
    """Mean distance, in crop units, between the ``reference`` keypoints (float32's, computed
    once per model) and the ``candidate`` graph's on the same inputs ``x``."""
    return float(np.linalg.norm(reference - keypoints(candidate, x), axis=-1).mean())


def quantize_int8(onnx_path: Path, crops: np.ndarray, holdout: np.ndarray) -> Path:
    """Write ``<id>-int8.onnx`` and its manifest next to ``onnx_path``; returns the new path.

    Calibrated on ``crops`` once per entry of ``CALIBRATIONS``; the one whose keypoints are
    closest to float32's on the ``holdout`` crops is kept and named in the manifest."""
    manifest = load_manifest(onnx_path.with_suffix(".json"))
    out = onnx_path.with_name(f"{onnx_path.stem}-int8.onnx")
    x = normalise(holdout, manifest.input.mean, manifest.input.std)
    reference = keypoints(onnx_path, x)
    with tempfile.TemporaryDirectory() as tmp:
        distance = {}
        for name in CALIBRATIONS:
            quantize_network(onnx_path, Path(tmp) / f"{name}.onnx", CropReader(crops, manifest), name)
            distance[name] = disagreement(reference, Path(tmp) / f"{name}.onnx", x)
        chosen = min(distance, key=distance.get)
        (Path(tmp) / f"{chosen}.onnx").replace(out)
    tried = ", ".join(f"{name} {d:.4f}" for name, d in distance.items())
    manifest.variant_of("int8", out, accuracy=None, parity_max_abs_error=None,
                        quantization="static QDQ of the network (per-channel int8 weights, uint8 "
                                     "activations; first and output layers and the decoding float32), "
                                     f"{chosen} calibration on {len(crops)} training crops, chosen by "
                                     f"the keypoints' mean distance to float32's on {len(holdout)} "
                                     f"held-out crops (crop units: {tried})"
                        ).save(out.with_suffix(".json"))
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    from models.architectures import ARCHITECTURES

    p.add_argument("--model", required=True, choices=(*ARCHITECTURES, "all"))
    p.add_argument("--onnx-dir", type=Path, default=Path("runs/export"))
    p.add_argument("--cache", type=Path, default=Path("cache/lsp180.npz"))
    p.add_argument("--count", type=int, default=CALIBRATION_CROPS, help="calibration crops")


def main(args: argparse.Namespace) -> None:
    """``poseserve quantize``: ``<id>-int8.onnx`` next to ``<id>.onnx``, calibrated on training crops."""
    from models.architectures import ARCHITECTURES

    for arch_id in (ARCHITECTURES if args.model == "all" else (args.model,)):
        path = args.onnx_dir / f"{arch_id}.onnx"
        size = load_manifest(path.with_suffix(".json")).input.size
        print(quantize_int8(path, calibration_crops(args.cache, size, args.count),
                            holdout_crops(args.cache, size)))
