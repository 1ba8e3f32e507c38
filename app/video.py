"""Video clips: probe, bound and sample frames with PyAV (FFmpeg in its wheels, so the
serving install decodes mp4, webm, mov and animated GIF offline).

Why probe first: everything a limit needs (frame size, duration, frame rate) is in the
container's header, so a clip over a limit is refused with 413 before one frame is
decoded. Headers can lie or be missing, so the sampler enforces the same limits again
while it decodes (and the stream then ends with an error line).

Frames are analysed at ``fps`` (default the clip's own rate, at most ``video_fps``):
the sampler keeps the first frame at or after each tick of that clock, so a 30 fps clip
analysed at 10 fps keeps every third frame whatever its timestamps' jitter.
"""
from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

from PIL import Image

from app.settings import Settings

CONTENT_TYPES = ("video/", "image/gif", "application/octet-stream")


class VideoError(ValueError):
    """A clip the service will not analyse: ``status`` is the HTTP answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


@dataclass(frozen=True)
class ClipInfo:
    width: int
    height: int
    duration_s: float | None  # None: the container does not say
    rate: float | None  # frames per second, None when unknown
    codec: str

    def analysis_fps(self, asked: float | None, cap: float) -> float:
        """Frames analysed per second: the request's ``fps``, else the clip's rate capped."""
        if asked is not None:
            return min(asked, self.rate) if self.rate else asked
        return min(self.rate or cap, cap)


class Clip:
    """An opened container and its first video stream; close it (or use ``with``)."""

    def __init__(self, file: IO[bytes]) -> None:
        import av

        try:
            self.container = av.open(file, mode="r", metadata_errors="ignore")
        except (av.FFmpegError, ValueError, OSError, UnicodeDecodeError):
            raise VideoError(415, "could not read the upload as a video: send mp4, webm, mov or an animated "
                                  "gif") from None
        if not self.container.streams.video:
            self.container.close()
            raise VideoError(422, "the file holds no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"
        ctx = self.stream.codec_context
        duration = None
        if self.stream.duration is not None and self.stream.time_base is not None:
            duration = float(self.stream.duration * self.stream.time_base)
        elif self.container.duration:
            duration = self.container.duration / 1e6  # microseconds (AV_TIME_BASE)
        rate = float(self.stream.average_rate) if self.stream.average_rate else None
        self.info = ClipInfo(ctx.width, ctx.height, duration, rate, ctx.name)
        if not ctx.width or not ctx.height:
            self.close()
            raise VideoError(422, "the video stream has no frame size")

    def close(self) -> None:
        self.container.close()

    def __enter__(self) -> Clip:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def check_limits(info: ClipInfo, fps: float, settings: Settings) -> None:
    """413 for a clip the header already shows over a limit (before decoding any of it)."""
    if max(info.width, info.height) > settings.video_max_side:
        raise VideoError(413, f"frames of {info.width}x{info.height} exceed the {settings.video_max_side}-pixel "
                              "limit on the long side (POSE_VIDEO_MAX_SIDE)")
    if info.duration_s is not None and info.duration_s > settings.video_max_seconds:
        raise VideoError(413, f"clip of {info.duration_s:.1f} s exceeds the {settings.video_max_seconds:g} s limit "
                              "(POSE_VIDEO_MAX_SECONDS)")
    if info.duration_s is not None and math.floor(info.duration_s * fps) + 1 > settings.video_max_frames:
        raise VideoError(413, f"{info.duration_s:.1f} s at {fps:g} fps is more than the "
                              f"{settings.video_max_frames} frames analysed per clip (POSE_VIDEO_MAX_FRAMES): "
                              "ask a lower fps")


@dataclass
class Frame:
    """One analysed frame, duck-typed as an ``app.uploads.Upload`` for the pipeline."""

    index: int  # position in the clip (every decoded frame counts)
    time_s: float
    image: Image.Image
    decode_s: float = 0.0
    prepared_s: float = 0.0

    @property
    def width(self) -> int:
        return self.image.width

    @property
    def height(self) -> int:
        return self.image.height

    def rgb(self, max_reduction: float = 1.0) -> tuple[Image.Image, float]:
        return self.image, 1.0


# A phone records portrait video as landscape frames plus a display matrix whose angle
# (FFmpeg's, counterclockwise) players apply: turning the stored frame counterclockwise by it.
_TURN = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}


def upright(image: Image.Image, rotation: float) -> Image.Image:
    """The frame as a player displays it (keypoints are then in the displayed frame's pixels):
    ``rotation`` is the frame's display-matrix angle (``VideoFrame.rotation``)."""
    turn = _TURN.get(round(rotation) % 360)
    return image.transpose(turn) if turn is not None else image


def sampled_frames(clip: Clip, fps: float, settings: Settings) -> Iterator[Frame]:
    """Decode the clip and yield the frames analysed at ``fps``; limits enforced as it goes.

    A blocking iterator (FFmpeg decodes in the caller's thread): the service advances it
    on a worker thread, one frame at a time, so a client that leaves stops the decoding.
    """
    import av

    period = 1.0 / fps
    next_tick = 0.0
    kept = 0
    rate = clip.info.rate or fps
    try:
        for index, frame in enumerate(clip.container.decode(clip.stream)):
            start = time.perf_counter()
            t = float(frame.time) if frame.time is not None else index / rate
            if t > settings.video_max_seconds:
                raise VideoError(413, f"clip runs past the {settings.video_max_seconds:g} s limit "
                                      "(POSE_VIDEO_MAX_SECONDS)")
            if t + 1e-6 < next_tick:
                continue
            if max(frame.width, frame.height) > settings.video_max_side:
                raise VideoError(413, f"a frame of {frame.width}x{frame.height} exceeds the "
                                      f"{settings.video_max_side}-pixel limit (POSE_VIDEO_MAX_SIDE)")
            kept += 1
            if kept > settings.video_max_frames:
                raise VideoError(413, f"more than {settings.video_max_frames} frames to analyse "
                                      "(POSE_VIDEO_MAX_FRAMES): ask a lower fps")
            next_tick = max(next_tick + period, t + period / 2)  # a gap in the clip does not cause a burst
            image = upright(frame.to_image(), getattr(frame, "rotation", 0))  # RGB24, as players show it
            yield Frame(index, round(t, 4), image, decode_s=time.perf_counter() - start)
    except av.FFmpegError as exc:
        raise VideoError(422, f"the video stream is damaged: {exc.strerror or 'decoding failed'}") from None
