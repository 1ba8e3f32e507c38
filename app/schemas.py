"""Response models: the JSON contract of the API, as it appears in /docs."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class ImageSize(BaseModel):
    width: int = Field(description="after EXIF orientation")
    height: int


class Keypoint(BaseModel):
    id: int = Field(description="index in LSP order")
    name: str
    x: float = Field(description="original-image pixels, (0, 0) = top-left corner")
    y: float
    score: float | None = Field(
        description="heatmap peak value for heatmap models; null for coordinate regressors "
                    "(DeepPose, IEF), which predict no confidence")


class HeatmapPNG(BaseModel):
    name: str
    png: str = Field(description="base64 8-bit grayscale PNG, H x W")
    min: float = Field(description="value = min + pixel / 255 * (max - min)")
    max: float


class Heatmaps(BaseModel):
    source: Literal["predicted", "rendered"] = Field(
        description="'predicted': the network's own output; 'rendered': Gaussians drawn at the "
                    "regressed coordinates, for models that output no heatmaps")
    format: Literal["png", "array"]
    height: int
    width: int
    to_image: list[list[float]] = Field(
        description="2x3 affine matrix A: [x, y] = A @ [col, row, 1] maps heatmap cell "
                    "(col, row) centres to original-image pixels")
    maps_png: list[HeatmapPNG] | None = None
    maps: list[list[list[float]]] | None = Field(None, description="K x H x W floats (format=array)")


class Timing(BaseModel):
    decode: float
    preprocess: float
    inference: float
    postprocess: float
    total: float


class StageKeypoints(BaseModel):
    stage: int
    keypoints: list[Keypoint]


class PoseResponse(BaseModel):
    model: str
    image: ImageSize
    crop: list[float] = Field(description="the square crop the model saw: [x0, y0, side] in image pixels")
    keypoints: list[Keypoint]
    heatmaps: Heatmaps | None = None
    stages: list[StageKeypoints] | None = Field(None, description="with stages=true")
    timing_ms: Timing


class ModelInfo(BaseModel):
    id: str
    architecture: str
    paper: str | None = None
    input_size: int
    output_kind: str
    stages: int | None = None
    keypoints: list[str]
    skeleton: list[list[int]]
    params: int | None = None
    flops: int | None = None
    accuracy: dict | None = None
    providers: list[str]


class ModelsResponse(BaseModel):
    models: list[ModelInfo]
    unavailable: dict[str, str] = Field(default_factory=dict, description="id → load error")
    skipped: dict[str, str] = Field(
        default_factory=dict, description="id → why this server does not serve it, e.g. an fp16 "
                                          "variant that needs the CUDA provider on a CPU-only server")


class ReadyResponse(BaseModel):
    ready: bool
    models: dict[str, list[str]] = Field(description="id → providers each session actually uses")
    unavailable: dict[str, str]


class ErrorResponse(BaseModel):
    detail: str | list


class CompareResponse(BaseModel):
    image: ImageSize
    results: list[PoseResponse] = Field(description="one result per served model (heatmaps omitted)")
    total_ms: float
