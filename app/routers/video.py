"""``POST /pose/video``: a clip in, one JSON line per analysed frame out, people tracked.

Why a stream of lines (``application/x-ndjson``): a long clip's answer would otherwise
sit in memory until the last frame and then race the client's timeout. Each frame goes
through the very pipeline ``POST /pose`` uses (detector, batched pose run), one frame at
a time, so a clip holds at most one session of each model at once and ``/pose`` requests
interleave with its frames; ``POSE_VIDEO_MAX_CONCURRENT`` bounds how many clips run.
"""
from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from app.clip_analysis import ClipAnalysis
from app.deps import DetectDep, Flip, MetricsDep, ModelDep, RegistryDep, SettingsDep, reject_unknown_fields
from app.schemas import ErrorResponse
from app.video import CONTENT_TYPES, Clip, VideoError, check_limits, sampled_frames

router = APIRouter(prefix="/pose", tags=["video"], dependencies=[Depends(reject_unknown_fields)])

Fps = Annotated[float | None, Query(gt=0, le=60, description="frames analysed per second of video; default: "
                                                             "the clip's rate, at most POSE_VIDEO_FPS (15)")]
Smooth = Annotated[bool, Query(description="One Euro filter on every track's keypoints (POSE_SMOOTH_MIN_CUTOFF, "
                                           "POSE_SMOOTH_BETA)")]
EXAMPLE = "\n".join([
    json.dumps({"frame": 0, "time_s": 0.0, "persons": [
        {"track_id": 1, "bbox": [212.4, 40.1, 96.3, 250.7], "score": 0.91, "crop": [180.2, 8.0, 313.4],
         "keypoints": [{"id": 0, "name": "right_ankle", "x": 231.5, "y": 282.0, "in_image": True, "score": 0.81}],
         "coco_keypoints": [262.1, 61.3, 0.9]}]}),
    json.dumps({"summary": {"frames": 150, "tracks": 2, "fps": 15.0, "width": 640, "height": 360,
                            "duration_s": 10.0, "model": "hourglass", "smooth": True, "flip_test": False,
                            "timing_ms": {"total": 9120.5, "decode_p50": 2.1, "pose_p50": 55.3},
                            "error": None}})])


def http_error(exc: VideoError) -> HTTPException:
    return HTTPException(exc.status, exc.detail)


@router.post("/video", response_class=StreamingResponse, summary="Track every person through a video clip",
             responses={200: {"description": "one JSON object per line: a `VideoFrame` per analysed frame "
                                             "(schema: VideoFrame), then one `{\"summary\": VideoSummary}`",
                              "content": {"application/x-ndjson": {"schema": {"type": "string"},
                                                                   "example": EXAMPLE}}},
                        **{code: {"model": ErrorResponse} for code in (404, 413, 415, 422, 503)}})
async def pose_video(
        request: Request,
        video: Annotated[UploadFile, File(description="mp4, webm, mov or animated gif")],
        m: ModelDep, reg: RegistryDep, detect: DetectDep, settings: SettingsDep, metrics: MetricsDep,
        fps: Fps = None, smooth: Smooth = False, flip: Flip = None) -> StreamingResponse:
    content_type = (video.content_type or "application/octet-stream").lower()
    if not content_type.startswith(CONTENT_TYPES):
        raise HTTPException(415, f"unsupported content type {content_type!r}; send a video")
    slots: asyncio.Semaphore = request.app.state.video_slots
    if slots.locked():
        raise HTTPException(503, f"every clip slot is busy ({settings.video_max_concurrent} at once)",
                            headers={"Retry-After": "10"})
    try:
        clip = await run_in_threadpool(Clip, video.file)
    except VideoError as exc:
        raise http_error(exc) from None
    rate = clip.info.analysis_fps(fps, settings.video_fps)
    try:
        check_limits(clip.info, rate, settings)
    except VideoError as exc:
        clip.close()
        raise http_error(exc) from None
    analysis = ClipAnalysis(m, reg, detect, settings, metrics, clip.info, rate, smooth, flip)

    async def lines():
        error = None
        # One thread owns the clip: FFmpeg's decoder is advanced, and finally closed, there in
        # turn, so a client leaving mid-frame never closes the container under a running decode.
        worker = ThreadPoolExecutor(1, thread_name_prefix="video")
        loop = asyncio.get_running_loop()
        frames = sampled_frames(clip, rate, settings)

        def close() -> None:
            frames.close()
            clip.close()

        async with slots:
            try:
                while (frame := await loop.run_in_executor(worker, next, frames, None)) is not None:
                    yield (await analysis.frame(frame)).model_dump_json() + "\n"
            except VideoError as exc:
                error = exc.detail
            except HTTPException as exc:  # a frame the pools refused (busy) or could not take
                error = f"{exc.status_code}: {exc.detail}"
            finally:
                worker.submit(close)
                worker.shutdown(wait=False)
        yield json.dumps({"summary": analysis.summary(error).model_dump()}) + "\n"

    return StreamingResponse(lines(), media_type="application/x-ndjson")
