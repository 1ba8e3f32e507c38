"""Service configuration: environment variables with the ``POSE_`` prefix (pydantic-settings)."""
from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.runtime import CpuArena

DEFAULT_MODEL_DIR = Path(__file__).resolve().parent.parent / "models" / "onnx"


def cpu_quota() -> int:
    """Cores this process may really use: the cgroup CPU quota (containers), else affinity.

    ``os.cpu_count()`` reports the host's cores inside a container; sizing thread pools
    from it is the classic onnxruntime oversubscription pitfall.
    """
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            return max(1, int(int(quota) // int(period)))
    except (OSError, ValueError):
        pass
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="POSE_", protected_namespaces=())

    model_dir: Path = Field(DEFAULT_MODEL_DIR, description="folder of <id>.onnx + <id>.json")
    default_model: str = Field("auto", description="model used when a request names none; auto: the hourglass, "
                                                   "as its int8 variant on a CPU server when that costs at most "
                                                   "half a point of PCK and is faster")
    pool_size: int = Field(0, ge=0, description="sessions per model; 0 = derived from the CPU quota")
    intra_op_threads: int = Field(0, ge=0, description="threads per session; 0 = derived")
    max_queue: int = Field(0, ge=0, description="hard cap on requests waiting for a session per model; "
                                                "0 = none (admission is by expected wait)")
    queue_timeout_s: float = Field(10.0, gt=0, description="longest expected wait for a session; a request "
                                                          "expected to wait longer gets 503 + Retry-After")
    inference_timeout_s: float = Field(30.0, gt=0, description="longest a request may take once running")
    max_upload_bytes: int = Field(20 * 1024 * 1024, gt=0, description="upload size limit")
    max_pixels: int = Field(40_000_000, gt=0, description="decode budget in 8-bit RGB pixels, checked from "
                                                         "the header; RGBA and 16-bit count more")
    decode_max_side: int = Field(2048, ge=256, description="images are decoded to at most this many pixels "
                                                           "on the long side (JPEG: DCT scaling)")
    large_image_pixels: int = Field(4_000_000, gt=0, description="decodes costing more than this (weighted "
                                                                 "pixels) run in the bounded decode pool")
    decode_workers: int = Field(1, ge=1, le=16, description="threads for large decodes")
    render_max_side: int = Field(2048, ge=256, description="/pose/render output long-side limit")
    header_timeout_s: float = Field(10.0, gt=0, description="time a client has to send a request's headers")
    read_timeout_s: float = Field(10.0, gt=0, description="longest pause while a body is sent (then 408)")
    body_timeout_s: float = Field(120.0, gt=0, description="time a client has to send a whole body (then 408)")
    max_connections: int = Field(256, ge=1, description="concurrent connections; beyond it uvicorn answers 503")
    allow_empty_model_dir: bool = Field(False, description="start even when the model directory is missing "
                                                           "or serves nothing (development only)")
    cpu_arena: CpuArena = Field("shared", description="where onnxruntime's activations live: shared = one arena "
                                                       "for the process (keeps the most that ran at once); off = "
                                                       "allocated per run (least memory, slower batches); "
                                                       "per-session = an arena per session (the sum over models)")
    # 4: the worst memory cases peaked at 798 MB (docs/arena.md) where 8 reached 1265 MB with the
    # 256 px default model, and a batched run was no cheaper per person than one crop on CPU
    # (docs/benchmarks.md).
    max_batch: int = Field(4, ge=1, le=64, description="most person crops per pose-model run: a crowded photo "
                                                       "runs in chunks of this many, bounding activation memory")
    flip_test: bool = Field(False, description="default of a request's flip: average every person with their "
                                               "mirror image, twice the pose-model compute")
    video_max_bytes: int = Field(100 * 1024 * 1024, gt=0, description="POST /pose/video upload size limit")
    video_max_seconds: float = Field(120.0, gt=0, description="longest clip analysed (seconds of video)")
    video_max_frames: int = Field(1800, ge=1, description="most frames analysed per clip (duration × fps)")
    video_max_side: int = Field(1920, ge=64, description="largest frame, long side in pixels")
    video_fps: float = Field(15.0, gt=0, le=60, description="default frames analysed per second (the clip's "
                                                            "own rate when lower)")
    video_max_concurrent: int = Field(1, ge=1, description="clips analysed at once; more wait, and a request "
                                                           "arriving when all are busy gets 503")
    smooth_min_cutoff: float = Field(1.0, gt=0, description="One Euro filter: cutoff at rest (Hz)")
    smooth_beta: float = Field(0.01, ge=0, description="One Euro filter: cutoff growth with speed (per pixel/s)")
    micro_batch: int = Field(0, ge=0, le=64, description="max requests per batched run; 0 or 1 = off")
    micro_batch_wait_ms: float = Field(2.0, ge=0, le=100, description="how long a batch waits to fill")
    device: str = Field("auto", pattern="^(auto|cpu|cuda)$", description="auto: CUDA if available")
    cors_origins: list[str] = Field(default_factory=list, description="allowed CORS origins; empty = CORS off")

    def threads_and_pool(self) -> tuple[int, int]:
        """(pool size, intra-op threads) such that pool × threads ≤ the CPU quota."""
        cores = cpu_quota()
        threads = self.intra_op_threads or (1 if self.pool_size else max(1, cores // 2))
        pool = self.pool_size or max(1, cores // threads)
        return pool, threads

    @field_validator("cpu_arena", mode="before")
    @classmethod
    def _arena_from_boolean(cls, value: object) -> object:
        """The older boolean spelling still works: true = per-session, false = off."""
        text = str(value).strip().lower()
        return {"true": "per-session", "1": "per-session", "false": "off", "0": "off"}.get(text, value)


@lru_cache
def get_settings() -> Settings:
    return Settings()
