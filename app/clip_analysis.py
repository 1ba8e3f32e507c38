"""One clip's analysis, frame by frame: the same pipeline as ``POST /pose`` on every
sampled frame, then the tracker (and the smoother). Shared by ``POST /pose/video`` and
``poseserve predict`` so that a clip analysed offline answers what the service answers.
"""
from __future__ import annotations

import time

import numpy as np

from app.metrics import Metrics
from app.pipeline import DetectParams, coco_keypoints, flips, resolve_people, run_pose
from app.registry import LoadedModel, Registry
from app.schemas import Keypoint, TrackedPerson, VideoFrame, VideoSummary
from app.settings import Settings
from app.tracking import PoseTracker
from app.video import ClipInfo, Frame


class ClipAnalysis:
    def __init__(self, m: LoadedModel, reg: Registry, detect: DetectParams, settings: Settings, metrics: Metrics,
                 info: ClipInfo, fps: float, smooth: bool = False, flip: bool | None = None) -> None:
        self.m, self.reg, self.detect, self.settings, self.metrics = m, reg, detect, settings, metrics
        self.info, self.fps, self.smooth, self.flip = info, fps, smooth, flip
        self.tracker = PoseTracker(smooth=smooth, fps=fps, min_cutoff=settings.smooth_min_cutoff,
                                   beta=settings.smooth_beta)
        self.decode_s: list[float] = []
        self.pose_s: list[float] = []
        self.started = time.perf_counter()
        self.size = (info.width, info.height)  # as displayed, once a frame says (a phone's rotation)

    async def frame(self, frame: Frame) -> VideoFrame:
        """Every person of this frame, with their track id (and smoothed keypoints)."""
        t0 = time.perf_counter()
        people = await resolve_people(self.reg, frame, None, self.detect, self.settings, self.metrics)
        answer = await run_pose(self.m, frame, people, "none", False, t0, time.perf_counter() - t0,
                                self.settings, self.metrics, self.flip)
        points = [np.array([[k.x, k.y] for k in p.keypoints]) for p in answer.persons]
        ids = self.tracker.update(frame.time_s, [p.bbox for p in answer.persons], points)
        persons = []
        for p, track_id, xy in zip(answer.persons, ids, points):
            if self.smooth:
                xy = self.tracker.smoothed(track_id, frame.time_s, xy)
                p.keypoints = [Keypoint(**{**k.model_dump(), "x": round(float(x), 2), "y": round(float(y), 2),
                                           "in_image": bool(0 <= x <= frame.width and 0 <= y <= frame.height)})
                               for k, (x, y) in zip(p.keypoints, xy)]
                p.coco_keypoints = coco_keypoints(self.m, p.keypoints)
            persons.append(TrackedPerson(**p.model_dump(exclude={"heatmaps", "stages"}), track_id=track_id))
        self.size = (frame.width, frame.height)
        self.decode_s.append(frame.decode_s)
        self.pose_s.append(time.perf_counter() - t0)
        return VideoFrame(frame=frame.index, time_s=frame.time_s, persons=persons)

    def summary(self, error: str | None = None) -> VideoSummary:
        def p50(xs: list[float]) -> float:
            return round(float(np.median(xs)) * 1e3, 2) if xs else 0.0

        return VideoSummary(
            frames=len(self.pose_s), tracks=self.tracker.seen, fps=round(self.fps, 3), width=self.size[0],
            height=self.size[1], duration_s=self.info.duration_s, model=self.m.id, smooth=self.smooth,
            flip_test=flips(self.m, self.flip, self.settings), error=error,
            timing_ms={"total": round((time.perf_counter() - self.started) * 1e3, 2),
                       "decode_p50": p50(self.decode_s), "pose_p50": p50(self.pose_s)})
