"""The model manifest: the typed contract between export and serving.

A manifest (``<id>.json`` beside ``<id>.onnx``) says what the graph is, how to prepare
its input and how to read its outputs. ``export/`` is its only writer; the service
validates every manifest against these models when it loads the model directory, so a
malformed one fails that model alone, with a reason, instead of a KeyError mid-request.

Torch-free: the serving install imports it. Reduced-precision variants (int8, fp16)
are the base manifest with a few fields changed (``variant_of``), and the person
detector has a manifest kind of its own, told apart by ``kind``.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

from models.heatmap_codec import HEATMAP_SIGMA

# File names only: a manifest can never point the server at a path outside its directory.
FILE_NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}\.onnx$"
MODEL_ID = r"^[a-z0-9][a-z0-9._-]{0,63}$"
SHA256 = r"^[0-9a-f]{64}$"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False)


class InputSpec(_Strict):
    """How to turn a person box into the graph's input tensor (``models.transforms``)."""

    name: str = "image"
    shape: list[int | str]
    size: int = Field(gt=0, le=2048, description="square input side in pixels")
    layout: Literal["NCHW"] = "NCHW"
    color: Literal["RGB"] = "RGB"
    scale: str = "pixel / 255"
    mean: tuple[float, float, float]
    std: tuple[Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)], Annotated[float, Field(gt=0)]]
    crop_margin: float = Field(gt=0, le=4)
    crop: str = "square of side crop_margin * max(w, h) centred on the person box"


class OutputSpec(_Strict):
    shape: list[int | str]
    description: str


class HeatmapDecoding(_Strict):
    """How a heatmap graph turns its maps into points (``models.heatmap_codec.decode_heatmaps``).
    The service decodes the averaged maps of a flipped pair the same way, so a request with
    ``flip=true`` is decoded as the graph decodes."""

    refine: Literal["dark", "taylor", "quarter"]
    sigma: float = Field(HEATMAP_SIGMA, gt=0, le=16,
                         description="the blur's width in heatmap cells (dark: the training targets' width)")


class EarlyExit(_Strict):
    """Where a staged network's served graph ends, decided by ``poseserve release`` from the
    full network's measured per-stage accuracy: the earliest stage within ``max_drop`` of the
    last on every evaluation set, served only when its graph is measured faster."""

    stage: int = Field(ge=1, description="the served graph ends after this stage/stack")
    of: int = Field(ge=1, description="stages the network was trained with")
    max_drop: float = Field(ge=0, description="PCK@0.2 an earlier exit may cost on each set")
    lsp_per_stage: list[float] = Field(description="the full network's LSP test PCK@0.2 after each stage")
    coco_dev_per_stage: list[float] | None = Field(None, description="the same on coco_dev")
    p50_ms_full: float | None = Field(None, description="CPU p50, batch 1, one thread: the full network")
    p50_ms_exit: float | None = Field(None, description="the same, the graph ending at ``stage``")


# Heatmap graphs exported before their manifests named a decoding: per-axis Taylor on the raw maps.
LEGACY_DECODING = HeatmapDecoding(refine="taylor")


class Artifact(_Strict):
    """What every served graph's manifest has: identity, file, checksum, provider needs."""

    id: str = Field(pattern=MODEL_ID)
    onnx: str = Field(pattern=FILE_NAME)
    sha256: str = Field(pattern=SHA256)
    requires_provider: str | None = Field(
        None, description="served only when this onnxruntime provider is active (fp16: CUDA)")

    def onnx_path(self, manifest_path: Path) -> Path:
        return manifest_path.with_name(self.onnx)

    def save(self, path: Path) -> None:
        """The one way a manifest is written (by ``export/``)."""
        path.write_text(self.model_dump_json(indent=2, exclude_none=False) + "\n")


class PoseManifest(Artifact):
    """A single-person pose model exported by ``export.onnx_export``."""

    kind: Literal["pose"] = "pose"
    architecture: str
    paper: str | None = None
    opset: int
    params: int = Field(ge=0)
    flops: int = Field(ge=0)
    flip_test: bool = False
    input: InputSpec
    output_kind: Literal["heatmaps", "coordinates"]
    heatmap_stride: int = Field(gt=0)
    heatmap_source: Literal["predicted", "rendered"]
    coordinates: str
    stages: int = Field(ge=1)
    outputs: dict[str, OutputSpec]
    keypoints: list[str] = Field(min_length=1)
    skeleton: list[tuple[int, int]]
    flip_permutation: list[int]
    decoding: HeatmapDecoding | None = Field(
        None, description="heatmap models: how the graph decodes its maps (none: a coordinate regressor)")
    pretrained: str | None = Field(None, description="what was initialised from pretrained weights")
    licence_file: str | None = Field(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$",
                                     description="the pretrained weights' licence, a file beside the ONNX")
    parity_max_abs_error: float | None = None
    training: dict[str, Any] | None = None
    accuracy: dict[str, Any] | None = None
    early_exit: EarlyExit | None = None
    # Reduced-precision variants:
    variant: Literal["int8", "fp16"] | None = None
    base_model: str | None = None
    precision: str | None = None
    quantization: str | None = None
    int8_decision: dict[str, Any] | None = None

    @property
    def heatmap_decoding(self) -> HeatmapDecoding:
        """The graph's decoding; a heatmap manifest without one predates the field (Taylor)."""
        return self.decoding or LEGACY_DECODING

    def variant_of(self, variant: Literal["int8", "fp16"], onnx_path: Path, **changes: Any) -> PoseManifest:
        """This manifest as the ``variant`` graph at ``onnx_path``: own id, file, sha256."""
        return self.model_copy(update={
            "id": f"{self.id}-{variant}", "onnx": onnx_path.name, "sha256": sha256_file(onnx_path),
            "variant": variant, "base_model": self.id, **changes})


class DetectorManifest(Artifact):
    """The person detector in front of the pose models (see ``export.detector``)."""

    kind: Literal["detector"] = "detector"
    architecture: str
    input: dict[str, Any] = Field(description="size, colour order, letterbox padding, value range")
    output: dict[str, Any] = Field(description="what the graph returns and in which units")
    classes: list[str] = Field(description="the class(es) kept: ['person']")
    score_threshold: float = Field(ge=0, le=1)
    iou_threshold: float = Field(gt=0, le=1)
    origin: str
    licence: str
    licence_file: str | None = None
    accuracy: dict[str, Any] | None = None


Manifest = Annotated[PoseManifest | DetectorManifest, Field(discriminator="kind")]
_ADAPTER: TypeAdapter[PoseManifest | DetectorManifest] = TypeAdapter(Manifest)


def load_manifest(path: Path) -> PoseManifest | DetectorManifest:
    """Read and validate ``path``; raises ``OSError`` or ``pydantic.ValidationError``."""
    return _ADAPTER.validate_json(path.read_bytes())
