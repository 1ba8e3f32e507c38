"""Response models: the JSON contract of the API, as it appears in /docs."""
from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, WithJsonSchema

# Heatmaps as floats stay a float32 array, rounded to 4 decimals, up to the response bytes: the
# service writes them with orjson straight from the array (``app.routers.pose.json_response``),
# ~80k numbers per person, where Python float lists cost ~32 bytes a number and most of the
# request's time. Pydantic's own JSON mode (``model_dump_json``) still works, through lists of
# the same 4-decimal numbers.
FloatMaps = Annotated[np.ndarray, PlainSerializer(lambda a: np.round(a.astype(np.float64), 4).tolist(),
                                                  when_used="json"), WithJsonSchema(
    {"type": "array", "items": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}})]


class ImageSize(BaseModel):
    width: int = Field(description="after EXIF orientation")
    height: int


class Keypoint(BaseModel):
    id: int = Field(description="index in the model's joint list (GET /models): 0-13 are the LSP joints "
                                "(right_ankle … head_top), 14-18 the COCO face points (nose, eyes, ears)")
    name: str
    x: float = Field(description="original-image pixels, (0, 0) = top-left corner")
    y: float
    in_image: bool = Field(description="whether (x, y) lies inside the image; false for a joint placed "
                                       "beyond its edge (a limb the frame cuts off), which no pixel shows")
    score: float | None = Field(
        description="heatmap peak value for heatmap models; null for coordinate regressors "
                    "(DeepPose, IEF), which predict no confidence")


class HeatmapPNG(BaseModel):
    name: str
    png: str = Field(description="base64 8-bit grayscale PNG, H x W")
    min: float = Field(description="value = min + pixel / 255 * (max - min)")
    max: float


class Heatmaps(BaseModel):
    model_config = ConfigDict(arbitrary_types_allowed=True)  # ``maps``: an array

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
    maps: FloatMaps | None = Field(None, description="K x H x W floats, 4 decimals (format=array)")


class Timing(BaseModel):
    """Milliseconds. ``total`` is the wall time from the endpoint's start; a large image's
    decode (in the decode pool, before that) is counted in ``decode`` only."""

    read: float = Field(description="upload read and header checks")
    decode: float = Field(description="decoding the image's pixels, every use together (for the detector, "
                                      "for the pose crops)")
    detect: float = Field(0.0, description="person detection without its decode (letterbox, detector run, "
                                           "NMS); 0 when a bbox was given or detect=false")
    preprocess: float = Field(description="crops and normalisation for the pose model (without the decode)")
    inference: float = Field(description="waiting for a session + the pose model's runs (all persons, "
                                         "in batches of at most POSE_MAX_BATCH)")
    postprocess: float
    total: float


class StageKeypoints(BaseModel):
    stage: int
    keypoints: list[Keypoint]


class Person(BaseModel):
    bbox: list[float] = Field(description="[x, y, w, h] person box in image pixels: the detector's, the "
                                          "bbox you sent, or the whole image with detect=false")
    score: float | None = Field(description="detector confidence in [0, 1]; null when the box was not "
                                            "detected (bbox given, or detect=false)")
    crop: list[float] = Field(description="the square crop the model saw: [x0, y0, side] in image pixels")
    keypoints: list[Keypoint]
    coco_keypoints: list[float] = Field(
        description="the same pose as COCO-17 in COCO's order (nose, left_eye, … right_ankle): "
                    "[x1, y1, s1, …, x17, y17, s17], 51 numbers, the `keypoints` of a COCO results "
                    "file. s = the joint's score (1 for coordinate regressors, which have none); a "
                    "joint the model does not predict is 0, 0, 0")
    heatmaps: Heatmaps | None = Field(None, description="this person's heatmaps (heatmaps=png|array)")
    stages: list[StageKeypoints] | None = Field(None, description="with stages=true")


class PoseResponse(BaseModel):
    model: str
    image: ImageSize
    persons: list[Person] = Field(
        description="every person found, most prominent first (detector score × box area); empty when "
                    "the detector finds nobody — no skeleton is ever invented")
    crop: list[float] | None = Field(description="the first person's crop (as before persons existed); "
                                                 "null when no person was found")
    keypoints: list[Keypoint] | None = Field(description="the first person's keypoints; null when no "
                                                         "person was found")
    heatmaps: Heatmaps | None = Field(None, description="the first person's heatmaps")
    stages: list[StageKeypoints] | None = Field(None, description="the first person's stages (stages=true)")
    flip_test: bool = Field(False, description="whether every person's answer is the average of the crop's "
                                              "and its mirror image's (the request's flip, else the server's "
                                              "POSE_FLIP_TEST)")
    timing_ms: Timing


class ModelInfo(BaseModel):
    id: str
    architecture: str
    paper: str | None = None
    input_size: int
    output_kind: str
    stages: int | None = Field(None, description="stages/stacks/iterations the served graph runs "
                                                "(with stages=true, an answer per stage)")
    trained_stages: int | None = Field(None, description="stages the network was trained with: more than "
                                                        "`stages` where the served graph ends early because "
                                                        "the later ones measured no better (docs/early_exit.md)")
    keypoints: list[str] = Field(description="the joints this model predicts, by id")
    skeleton: list[list[int]] = Field(description="limbs as pairs of keypoint ids")
    coco_order: list[int | None] = Field(
        description="for each COCO-17 joint (COCO's order), its keypoint id here; null where this model "
                    "does not predict it")
    flip_test: bool = Field(description="whether a request that does not say flip= gets the test-time flip")
    params: int | None = None
    flops: int | None = Field(None, description="floating-point operations of one crop through this graph")
    accuracy: dict | None = None
    providers: list[str]


class DetectorInfo(BaseModel):
    id: str
    architecture: str
    input_size: int
    classes: list[str]
    score_threshold: float = Field(description="default min_person_score")
    iou_threshold: float = Field(description="non-maximum suppression IoU")
    origin: str
    licence: str
    providers: list[str]


class ModelsResponse(BaseModel):
    default_model: str = Field(description="the model a request that names none gets")
    models: list[ModelInfo] = Field(description="the pose models")
    detector: DetectorInfo | None = Field(None, description="the person detector in front of them; null "
                                                            "when none is loaded (then send bbox or detect=false)")
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
    persons_detected: int | None = Field(
        None, description="people the detector found (detected once; every model runs on the same boxes)")
    results: list[PoseResponse] = Field(description="one result per compared model, in the order asked "
                                                    "(heatmaps only with heatmaps=png|array)")
    total_ms: float


class TrackedPerson(Person):
    track_id: int = Field(description="the same person keeps the same id from frame to frame within a clip")


class VideoFrame(BaseModel):
    """One line of the /pose/video stream per analysed frame."""

    frame: int = Field(description="the frame's index in the clip (every decoded frame counts)")
    time_s: float = Field(description="the frame's timestamp in seconds")
    persons: list[TrackedPerson]


class VideoSummary(BaseModel):
    frames: int = Field(description="frames analysed")
    tracks: int = Field(description="distinct track ids")
    fps: float = Field(description="frames analysed per second of video")
    width: int
    height: int
    duration_s: float | None = Field(description="the clip's duration from its header, if it says")
    model: str
    smooth: bool
    flip_test: bool
    timing_ms: dict[str, float] = Field(description="total, and per frame: decode, pose (detect + pose) p50")
    error: str | None = Field(None, description="why the analysis stopped early (e.g. a limit crossed while "
                                                "decoding, a damaged stream); null when the clip was done")
