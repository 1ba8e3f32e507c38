"""Tracking people across a clip's frames, and smoothing their keypoints.

Association is greedy on a similarity that mixes the box overlap (IoU) with the
keypoints' agreement (COCO's object keypoint similarity, one uniform falloff for every
joint): the most similar person–track pair is matched first, then the next among those
left, down to ``min_similarity``. This is the matching of the simple pose-tracking
baselines (Xiao et al., ECCV 2018, greedy on OKS/IoU); it needs no assignment solver.
The maintained tracker libraries were measured against the serving image's rules and
do not fit: Norfair pins numpy below 2, Roboflow's ``trackers`` pulls OpenCV.

A track unmatched for ``max_gap_s`` seconds ends; a person matching no track starts a
new one with the next id. Ids are never reused within a clip.

Smoothing is the One Euro filter (Casiez et al., CHI 2012), its authors' own package:
per track, per joint, per axis, an adaptive low-pass whose cutoff rises with speed —
still joints stop jittering, fast ones do not lag. ``min_cutoff`` (Hz) sets the
smoothing at rest, ``beta`` how fast the cutoff grows with speed (pixels per second).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

KEYPOINT_FALLOFF = 0.1  # OKS's per-joint constant, the same for every joint here


def iou(a: list[float], b: list[float]) -> float:
    """Intersection over union of two [x, y, w, h] boxes."""
    ix = max(0.0, min(a[0] + a[2], b[0] + b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[1] + a[3], b[1] + b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = a[2] * a[3] + b[2] * b[3] - inter
    return inter / union if union > 0 else 0.0


def keypoint_similarity(a: np.ndarray, b: np.ndarray, box: list[float]) -> float:
    """OKS of two (K, 2) poses at the scale of ``box``: 1 identical, → 0 far apart."""
    area = max(box[2] * box[3], 1.0)
    d2 = ((a - b) ** 2).sum(1)
    return float(np.exp(-d2 / (2 * area * (2 * KEYPOINT_FALLOFF) ** 2)).mean())


@dataclass
class Track:
    id: int
    box: list[float]
    points: np.ndarray  # (K, 2), as estimated (not smoothed): association compares raw answers
    last_s: float
    filters: list | None = None  # One Euro filters, 2 per joint, made on first use


@dataclass
class PoseTracker:
    min_similarity: float = 0.2
    max_gap_s: float = 1.0
    smooth: bool = False
    min_cutoff: float = 1.0
    beta: float = 0.01
    d_cutoff: float = 1.0
    fps: float = 15.0
    tracks: list[Track] = field(default_factory=list)
    next_id: int = 1
    seen: int = 0  # tracks started so far

    def similarity(self, track: Track, box: list[float], points: np.ndarray) -> float:
        return 0.5 * iou(track.box, box) + 0.5 * keypoint_similarity(track.points, points, box)

    def update(self, time_s: float, boxes: list[list[float]], points: list[np.ndarray]) -> list[int]:
        """Assign a track id to each person of this frame (in the given order)."""
        self.tracks = [t for t in self.tracks if time_s - t.last_s <= self.max_gap_s]
        pairs = sorted(((self.similarity(t, b, p), ti, pi)
                        for ti, t in enumerate(self.tracks) for pi, (b, p) in enumerate(zip(boxes, points))),
                       reverse=True)
        ids: list[int | None] = [None] * len(boxes)
        used: set[int] = set()
        for sim, ti, pi in pairs:
            if sim < self.min_similarity:
                break
            if ti in used or ids[pi] is not None:
                continue
            used.add(ti)
            track = self.tracks[ti]
            track.box, track.points, track.last_s = boxes[pi], points[pi], time_s
            ids[pi] = track.id
        for pi, track_id in enumerate(ids):
            if track_id is None:
                track = Track(self.next_id, boxes[pi], points[pi], time_s)
                self.tracks.append(track)
                self.next_id += 1
                self.seen += 1
                ids[pi] = track.id
        return [i for i in ids if i is not None]

    def smoothed(self, track_id: int, time_s: float, points: np.ndarray) -> np.ndarray:
        """The One Euro filtered positions of this track's joints at ``time_s``."""
        from OneEuroFilter import OneEuroFilter

        track = next(t for t in self.tracks if t.id == track_id)
        if track.filters is None:
            track.filters = [OneEuroFilter(self.fps, self.min_cutoff, self.beta, self.d_cutoff)
                             for _ in range(points.size)]
        flat = points.reshape(-1)
        return np.array([f(float(v), time_s) for f, v in zip(track.filters, flat)]).reshape(points.shape)
