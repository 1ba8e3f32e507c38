"""``poseserve predict PATH...``: photos, videos and folders of them from the command line, no server.

Every image goes through the service's own pipeline (``app.pipeline``: upload checks,
the detector, every person's crop through the pose model, keypoints in image pixels), so
an answer here is the answer ``POST /pose`` gives. Results are written as a COCO keypoint
*results* file (``image_id``, ``category_id``, ``keypoints``, ``score``: what pycocotools'
``COCO.loadRes`` reads), one entry per person, plus ``file_name``, ``bbox`` and the
joints by name; ``--render DIR`` also writes each photo with its skeletons drawn.

A video goes through ``POST /pose/video``'s own analysis (``app.clip_analysis``: sampled
frames, tracking, optional smoothing) and is written as the same JSON lines, to
``OUT_DIR/<name>.jsonl``; ``--render DIR`` writes ``<name>.mp4`` with every tracked
skeleton drawn. ``<name>`` is the file's stem, made distinct (``x-2``) when two files share one. Torch-free: it runs on the serving install.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from models.detection import person_score

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
VIDEO_SUFFIXES = frozenset({".mp4", ".webm", ".mov", ".mkv", ".avi", ".m4v"})


def image_files(paths: list[Path]) -> Iterator[Path]:
    """The files named, and the images and videos in the folders named (recursively, in name order)."""
    for path in paths:
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*")
                              if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES and p.is_file())
        else:
            yield path


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def output_stems(files: list[Path]) -> dict[Path, str]:
    """A distinct output name for every file: its stem, then ``stem-2``, ``stem-3`` … for later
    files of the same stem (``a/x.jpg`` and ``b/x.jpg``; ``x.mp4`` and ``x.mov``), so no
    render or clip result overwrites another's."""
    taken: set[str] = set()
    names: dict[Path, str] = {}
    for path in files:
        name, n = path.stem, 1
        while name in taken:
            n += 1
            name = f"{path.stem}-{n}"
        taken.add(name)
        names[path] = name
    return names


def image_id(path: Path, index: int) -> int:
    """COCO's id when the file is named after it (``000000005001.jpg`` → 5001), else its index."""
    return int(path.stem) if path.stem.isdigit() else index


class Progress:
    """``[i/n] name`` on a terminal, rewritten in place; nothing when stderr is piped."""

    def __init__(self, total: int) -> None:
        self.total, self.on = total, sys.stderr.isatty()

    def __call__(self, i: int, name: str) -> None:
        if self.on:
            print(f"\r[{i}/{self.total}] {name[:60]:<60}", end="", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.on:
            print(file=sys.stderr)


async def predict(files: list[Path], args: argparse.Namespace) -> tuple[list[dict], list[str], list[Path]]:
    from fastapi import HTTPException

    from app.imaging import ImageError
    from app.metrics import Metrics
    from app.pipeline import DetectParams, resolve_people, run_pose
    from app.registry import load_registry
    from app.render import draw_people, fit_within
    from app.settings import Settings
    from app.uploads import Upload
    from app.video import VideoError

    settings = Settings(**{k: v for k, v in (("model_dir", args.model_dir), ("pool_size", 1)) if v is not None})
    registry = load_registry(settings)
    metrics = Metrics()
    results: list[dict] = []
    failed: list[str] = []
    videos: list[Path] = []
    try:
        model = registry.models.get(args.model or registry.default_for(settings.default_model))
        if model is None:
            raise SystemExit(f"poseserve predict: no model {args.model!r}; available: {sorted(registry.models)}")
        progress = Progress(len(files))
        params = DetectParams(not args.no_detect, args.min_person_score, args.max_persons)
        names = output_stems(files)
        for index, path in enumerate(files, start=1):
            progress(index, path.name)
            if is_video(path):
                try:
                    await predict_video(path, names[path], model, registry, params, settings, metrics, args)
                    videos.append(path)
                except (OSError, VideoError, HTTPException) as exc:
                    failed.append(f"{path}: {getattr(exc, 'detail', None) or exc}")
                continue
            try:
                upload = Upload(path.read_bytes(), settings.max_pixels, settings.decode_max_side,
                                settings.large_image_pixels)
                t0 = time.perf_counter()
                people = await resolve_people(registry, upload, None, params, settings, metrics)
                answer = await run_pose(model, upload, people, "none", False, t0,
                                        time.perf_counter() - t0, settings, metrics, args.flip)
            except (OSError, ImageError, HTTPException) as exc:
                detail = getattr(exc, "detail", None) or str(exc)
                failed.append(f"{path}: {detail}")
                continue
            for person in answer.persons:
                results.append({"image_id": image_id(path, index), "file_name": str(path), "category_id": 1,
                                "keypoints": person.coco_keypoints, "bbox": person.bbox,
                                "score": round(person_score(person.score, [k.score for k in person.keypoints]), 5),
                                "joints": {k.name: [k.x, k.y, k.score] for k in person.keypoints}})
            if args.render:
                args.render.mkdir(parents=True, exist_ok=True)
                img = fit_within(upload.rgb(max(upload.width, upload.height) / settings.render_max_side)[0],
                                 settings.render_max_side)
                drawn = draw_people(img, answer.persons, model.manifest.skeleton, model.manifest.keypoints,
                                    scale=img.width / upload.width)
                buf = io.BytesIO()
                drawn.save(buf, "PNG", compress_level=3)
                (args.render / f"{names[path]}.png").write_bytes(buf.getvalue())
        progress.close()
    finally:
        registry.close()
    return results, failed, videos


async def predict_video(path: Path, name: str, model, registry, params, settings, metrics,
                        args: argparse.Namespace) -> None:
    """One clip → ``OUT_DIR/<name>.jsonl`` (and ``RENDER/<name>.mp4``), as ``POST /pose/video`` answers it."""
    from app.clip_analysis import ClipAnalysis
    from app.video import Clip, check_limits, sampled_frames

    out_dir = args.out_dir or Path(".")
    out_dir.mkdir(parents=True, exist_ok=True)
    with path.open("rb") as file, Clip(file) as clip:
        fps = clip.info.analysis_fps(args.fps, settings.video_fps)
        check_limits(clip.info, fps, settings)
        analysis = ClipAnalysis(model, registry, params, settings, metrics, clip.info, fps, args.smooth, args.flip)
        writer = VideoRender(args.render / f"{name}.mp4", fps, model) if args.render else None
        error = None
        with (out_dir / f"{name}.jsonl").open("w") as out:
            try:
                for frame in sampled_frames(clip, fps, settings):
                    line = await analysis.frame(frame)
                    out.write(line.model_dump_json() + "\n")
                    if writer:
                        writer.add(frame.image, line.persons)
            except VideoError as exc:
                error = exc.detail
            finally:
                if writer:
                    writer.close()
            out.write(json.dumps({"summary": analysis.summary(error).model_dump()}) + "\n")
    print(f"poseserve predict: {path} → {out_dir / (name + '.jsonl')}"
          + (f" ({error})" if error else ""), file=sys.stderr)


class VideoRender:
    """An mp4 of the analysed frames with every tracked skeleton drawn (H.264, yuv420p), at
    the size of the frames as shown (a phone clip's are turned upright): the first one's."""

    def __init__(self, path: Path, fps: float, model) -> None:
        import av

        path.parent.mkdir(parents=True, exist_ok=True)
        self.model = model
        self.container = av.open(str(path), "w")
        self.stream = self.container.add_stream("libx264", rate=round(fps))
        self.stream.pix_fmt = "yuv420p"
        self.sized = False

    def add(self, image, persons) -> None:
        import av

        from app.render import draw_people

        if not self.sized:
            self.stream.width, self.stream.height = image.width // 2 * 2, image.height // 2 * 2  # yuv420p: even
            self.sized = True
        drawn = draw_people(image, persons, self.model.manifest.skeleton, self.model.manifest.keypoints)
        drawn = drawn.crop((0, 0, self.stream.width, self.stream.height))
        for packet in self.stream.encode(av.VideoFrame.from_image(drawn)):
            self.container.mux(packet)

    def close(self) -> None:
        if self.sized:  # a clip with no frame analysed has no stream to flush
            for packet in self.stream.encode():
                self.container.mux(packet)
        self.container.close()


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("paths", nargs="+", type=Path, help="images, videos and folders of them")
    p.add_argument("--model", help="pose model id (default: POSE_DEFAULT_MODEL: the hourglass, or its int8 variant where "
                                                      "that costs at most half a point)")
    p.add_argument("--model-dir", type=Path, help="default: POSE_MODEL_DIR or the shipped models")
    p.add_argument("--out", type=Path, help="COCO keypoint results JSON (default: standard output)")
    p.add_argument("--render", type=Path, help="also write each photo (PNG) and video (mp4) with its skeletons "
                                               "drawn into this folder")
    p.add_argument("--out-dir", type=Path, help="videos: where <name>.jsonl goes (default: the current folder)")
    p.add_argument("--fps", type=float, help="videos: frames analysed per second (default: the clip's, at most "
                                             "POSE_VIDEO_FPS)")
    p.add_argument("--smooth", action="store_true", help="videos: One Euro filter on every track's keypoints")
    p.add_argument("--min-person-score", type=float, help="lowest detector score kept (default: the detector's)")
    p.add_argument("--max-persons", type=int, default=10, help="at most this many people per photo")
    p.add_argument("--no-detect", action="store_true", help="each image is one person (already a person crop)")
    p.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="test-time flip: average each person with their mirror image (twice the pose-model "
                        "time; default: POSE_FLIP_TEST, off)")


def main(args: argparse.Namespace) -> None:
    files = list(image_files(args.paths))
    results, failed, videos = asyncio.run(predict(files, args))
    images = len({r["file_name"] for r in results})
    if any(not is_video(p) for p in files) or not videos:  # the photos' COCO results
        text = json.dumps(results, indent=1) + "\n"
        if args.out:
            args.out.write_text(text)
        else:
            sys.stdout.write(text)
    for line in failed:
        print(f"poseserve predict: skipped {line}", file=sys.stderr)
    print(f"poseserve predict: {len(results)} people in {images} images"
          + (f", {len(videos)} videos" if videos else "") + (f", {len(failed)} skipped" if failed else ""),
          file=sys.stderr)
    if failed and not results and not videos:
        raise SystemExit(1)
