"""``poseserve bench-video``: what ``POST /pose/video`` costs on this machine.

Clips are composed from one LSP test photo of a single athlete, pasted 1 and 4 times
onto a 640×360 frame and walking, so the only thing that changes between them is the
number of people. Against a real server on loopback (the service's default settings):

- analysed frames per second end to end (upload, decode, detector, pose, tracking,
  smoothing, the JSON lines read by the client) for 1 and 4 people;
- the server's RSS sampled through a 60-second clip: flat, or by how much it grew;
- ``POST /pose`` p50 on its own and while a clip is being analysed: what a clip costs
  the photo requests that share the server.
"""
from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import statistics
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

SINGLE = Path("lsp") / "images" / "im1500.jpg"  # one athlete; the detector finds exactly one
SIZE = (640, 360)


def walking_clip(person: Image.Image, people: int, seconds: float, rate: int = 15) -> bytes:
    """``people`` copies of the athlete walking left and right across a 640×360 frame (H.264)."""
    import av

    figure = np.asarray(person.resize((int(person.width * 200 / person.height), 200)))
    h, w = figure.shape[:2]
    lanes = np.linspace(0, SIZE[0] - w, people + 2)[1:-1] if people > 1 else [SIZE[0] / 2 - w / 2]
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width, stream.height, stream.pix_fmt = SIZE[0], SIZE[1], "yuv420p"
        for i in range(int(seconds * rate)):
            frame = np.full((SIZE[1], SIZE[0], 3), 115, np.uint8)
            for lane, x0 in enumerate(lanes):
                swing = 30 * np.sin(2 * np.pi * (i / rate) / 4 + lane)  # ±30 px over 4 s
                x = int(np.clip(x0 + swing, 0, SIZE[0] - w))
                frame[80:80 + h, x:x + w] = figure if lane % 2 == 0 else figure[:, ::-1]
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return buf.getvalue()


def post_clip(port: int, clip: bytes, query: str, on_line=None) -> dict:
    """Stream one clip through ``/pose/video``; returns the summary (after every line was read)."""
    from benchmarks.bench import multipart

    body, content_type = multipart(clip, "c.mp4", "video/mp4", field="video")
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.request("POST", f"/pose/video?{query}", body, {"Content-Type": content_type})
    response = conn.getresponse()
    assert response.status == 200, response.read()[:300]
    summary = None
    for raw in response:
        line = json.loads(raw)
        if "summary" in line:
            summary = line["summary"]
        elif on_line:
            on_line(line)
    conn.close()
    assert summary is not None and summary["error"] is None, summary
    return summary


def measure(model_dir: Path, data: str | None, seconds: float, long_seconds: float, n: int) -> dict:
    from benchmarks.bench import Client, Server
    from benchmarks.bench import rss_mb

    root = Path(data or os.environ.get("POSE_DATA_DIR", "../shared/datasets"))
    person = Image.open(root / SINGLE).convert("RGB")
    photo = (root / SINGLE).read_bytes()
    server = Server(model_dir, threads=0, pool=0)
    try:
        client = Client(server.port)
        result: dict = {"fps": {}}
        for people in (1, 4):
            clip = walking_clip(person, people, seconds)
            post_clip(server.port, clip, "fps=15")  # warm-up
            t = time.perf_counter()
            summary = post_clip(server.port, clip, "fps=15&smooth=true")
            wall = time.perf_counter() - t
            result["fps"][people] = {"frames": summary["frames"], "seconds": round(wall, 2),
                                     "fps": round(summary["frames"] / wall, 2), "tracks": summary["tracks"],
                                     "pose_p50_ms": summary["timing_ms"]["pose_p50"]}
            print(people, result["fps"][people], flush=True)

        def pose_p50(count: int) -> float:
            times = []
            for _ in range(count):
                t = time.perf_counter()
                status, _ = client.post_image("/pose?heatmaps=none", photo)
                assert status == 200
                times.append(time.perf_counter() - t)
            return statistics.median(times) * 1e3

        result["pose_alone_ms"] = round(pose_p50(n), 2)
        long_clip = walking_clip(person, 1, long_seconds)
        rss: list[tuple[float, float]] = []
        done = threading.Event()
        start = time.perf_counter()
        runner = threading.Thread(target=lambda: (post_clip(server.port, long_clip, "fps=15&smooth=true"),
                                                  done.set()))
        runner.start()
        during = []
        while not done.is_set():
            rss.append((time.perf_counter() - start, rss_mb(server.proc.pid)))
            t = time.perf_counter()
            status, _ = client.post_image("/pose?heatmaps=none", photo)
            assert status == 200
            during.append(time.perf_counter() - t)
            time.sleep(0.1)
        runner.join()
        rss.append((time.perf_counter() - start, rss_mb(server.proc.pid)))
        values = [r for _, r in rss]
        warm = values[len(values) // 4]
        result["long"] = {"seconds": long_seconds, "wall_s": round(rss[-1][0], 1),
                          "pose_during_ms": round(statistics.median(during) * 1e3, 2), "pose_requests": len(during),
                          "rss_start_mb": round(values[0], 1), "rss_max_mb": round(max(values), 1),
                          "rss_end_mb": round(values[-1], 1), "rss_growth_after_warmup_mb": round(values[-1] - warm, 1)}
        print(result["long"], flush=True)
    finally:
        server.close()
    return result


def report(r: dict) -> str:
    long = r["long"]
    lines = ["# Video: `POST /pose/video` on this machine", "",
             f"Measured by `poseserve bench-video` in one run on {os.cpu_count()} cores, the server at its default "
             "settings (hourglass, detector on, `smooth=true`, 15 analysed frames per second), 640×360 H.264 clips "
             "of one LSP athlete pasted 1 or 4 times, walking. *frames/s*: analysed frames per second of wall "
             "time, end to end (upload, decode, detector, pose, tracking, smoothing, the client reading every "
             "line).", "",
             "| people | frames | wall s | frames/s | tracks | server p50 per frame ms |", "|---|---|---|---|---|---|"]
    for people, f in r["fps"].items():
        lines.append(f"| {people} | {f['frames']} | {f['seconds']} | **{f['fps']}** | {f['tracks']} | {f['pose_p50_ms']} |")
    lines += ["", f"A {long['seconds']:.0f}-second clip (1 person) took {long['wall_s']} s. Server RSS: "
              f"{long['rss_start_mb']} MB at its start, {long['rss_max_mb']} MB at most, {long['rss_end_mb']} MB at "
              f"its end ({long['rss_growth_after_warmup_mb']:+} MB after the first quarter).", "",
              f"`POST /pose` (the athlete's photo, detector on) p50: **{r['pose_alone_ms']} ms** alone, "
              f"**{long['pose_during_ms']} ms** while the clip was analysed ({long['pose_requests']} requests, one "
              "client, 0.1 s apart).", ""]
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", type=Path, default=Path("models/onnx"))
    p.add_argument("--data", help="datasets folder (default: $POSE_DATA_DIR or ../shared/datasets)")
    p.add_argument("--seconds", type=float, default=10.0, help="length of the 1- and 4-person clips")
    p.add_argument("--long-seconds", type=float, default=60.0, help="length of the memory / interference clip")
    p.add_argument("--n", type=int, default=30, help="/pose requests for the idle p50")
    p.add_argument("--out", type=Path, default=Path("docs/video.md"))


def main(args: argparse.Namespace) -> None:
    text = report(measure(args.model_dir, args.data, args.seconds, args.long_seconds, args.n))
    args.out.write_text(text)
    print(text)
