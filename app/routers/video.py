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
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, File, HTTPException, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from app.deps import DetectDep, Flip, MetricsDep, ModelDep, RegistryDep, SettingsDep, reject_unknown_fields
from app.pipeline import coco_keypoints, flips, resolve_people, run_pose
from app.schemas import ErrorResponse, Keypoint, TrackedPerson, VideoFrame, VideoSummary
from app.tracking import PoseTracker
from app.video import CONTENT_TYPES, Clip, Frame, VideoError, check_limits, sampled_frames

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
    tracker = PoseTracker(smooth=smooth, fps=rate, min_cutoff=settings.smooth_min_cutoff, beta=settings.smooth_beta)
    flip_test = flips(m, flip, settings)

    async def lines():
        start = time.perf_counter()
        decode_s, pose_s, count, error = [], [], 0, None
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
                while True:
                    t = time.perf_counter()
                    frame = await loop.run_in_executor(worker, next, frames, None)
                    if frame is None:
                        break
                    decode_s.append(time.perf_counter() - t)
                    t = time.perf_counter()
                    line = await analyse(frame)
                    pose_s.append(time.perf_counter() - t)
                    count += 1
                    yield line.model_dump_json() + "\n"
            except VideoError as exc:
                error = exc.detail
            except HTTPException as exc:  # a frame the pools refused (busy) or could not take
                error = f"{exc.status_code}: {exc.detail}"
            finally:
                worker.submit(close)
                worker.shutdown(wait=False)
        timing = {"total": round((time.perf_counter() - start) * 1e3, 2),
                  "decode_p50": round(float(np.median(decode_s)) * 1e3, 2) if decode_s else 0.0,
                  "pose_p50": round(float(np.median(pose_s)) * 1e3, 2) if pose_s else 0.0}
        summary = VideoSummary(frames=count, tracks=tracker.seen, fps=round(rate, 3), width=clip.info.width,
                               height=clip.info.height, duration_s=clip.info.duration_s, model=m.id,
                               smooth=smooth, flip_test=flip_test, timing_ms=timing, error=error)
        yield json.dumps({"summary": summary.model_dump()}) + "\n"

    async def analyse(frame: Frame) -> VideoFrame:
        t0 = time.perf_counter()
        people = await resolve_people(reg, frame, None, detect, settings, metrics)
        answer = await run_pose(m, frame, people, "none", False, t0, time.perf_counter() - t0, settings, metrics,
                                flip)
        points = [np.array([[k.x, k.y] for k in p.keypoints]) for p in answer.persons]
        ids = tracker.update(frame.time_s, [p.bbox for p in answer.persons], points)
        persons = []
        for p, track_id, xy in zip(answer.persons, ids, points):
            if smooth:
                xy = tracker.smoothed(track_id, frame.time_s, xy)
                p.keypoints = [Keypoint(**{**k.model_dump(), "x": round(float(x), 2), "y": round(float(y), 2),
                                           "in_image": bool(0 <= x <= frame.width and 0 <= y <= frame.height)})
                               for k, (x, y) in zip(p.keypoints, xy)]
                p.coco_keypoints = coco_keypoints(m, p.keypoints)
            persons.append(TrackedPerson(**p.model_dump(exclude={"heatmaps", "stages"}), track_id=track_id))
        return VideoFrame(frame=frame.index, time_s=frame.time_s, persons=persons)

    return StreamingResponse(lines(), media_type="application/x-ndjson")
