"""A real uvicorn server on loopback: HTTP end to end, and graceful shutdown on SIGTERM."""
from __future__ import annotations

import pytest

import signal
import threading
import time

import httpx2

from tests.helpers import image_bytes

pytestmark = pytest.mark.slow  # real servers / benchmarks / fuzzing: minutes, not seconds


def test_pose_over_real_http(server):
    url, _ = server
    r = httpx2.post(f"{url}/pose", params={"model": "cpm", "heatmaps": "png", "detect": "false"},
                   files={"image": ("p.webp", image_bytes("WEBP"), "image/webp")}, timeout=30)
    assert r.status_code == 200 and len(r.json()["keypoints"]) == 19
    assert r.headers["x-request-id"]


def test_streamed_upload_over_the_limit_is_cut_off(server):
    url, _ = server

    def chunks():
        for _ in range(64):  # 64 MiB offered, no Content-Length (chunked)
            yield b"\0" * (1 << 20)

    body = b"--b\r\nContent-Disposition: form-data; name=\"image\"; filename=\"x.jpg\"\r\n\r\n"
    r = httpx2.post(f"{url}/pose", content=(c for part in ([body], chunks()) for c in part),
                   headers={"content-type": "multipart/form-data; boundary=b"}, timeout=30)
    assert r.status_code == 413 and "limit" in r.json()["detail"]


def test_sigterm_lets_in_flight_requests_finish(server):
    url, proc = server
    png = image_bytes("PNG", (200, 300))
    boundary = b"b0undary"
    body = (b"--" + boundary + b'\r\nContent-Disposition: form-data; name="image"; filename="p.png"\r\n'
            b"Content-Type: image/png\r\n\r\n" + png + b"\r\n--" + boundary + b"--\r\n")
    results: list[int] = []
    started = threading.Event()

    def slow_upload():
        """The upload trickles in over ~1.5 s, so it is in flight when SIGTERM lands."""
        step = len(body) // 8 + 1
        for i in range(0, len(body), step):
            started.set()
            yield body[i:i + step]
            time.sleep(0.2)

    def client():
        r = httpx2.post(f"{url}/pose", content=slow_upload(), timeout=30,
                       headers={"content-type": "multipart/form-data; boundary=b0undary"})
        results.append(r.status_code)

    threads = [threading.Thread(target=client) for _ in range(2)]
    for t in threads:
        t.start()
    started.wait(10)
    time.sleep(0.4)
    proc.send_signal(signal.SIGTERM)
    for t in threads:
        t.join(30)
    assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once drained
    assert results == [200, 200]


def _inferences(url: str, graph: str) -> float:
    text = httpx2.get(f"{url}/metrics", timeout=10).text
    return sum(float(line.split()[-1]) for line in text.splitlines()
               if line.startswith("poseserve_inference_seconds_count") and f'"{graph}"' in line)


def test_a_client_that_leaves_a_video_stops_its_analysis(server):
    pytest.importorskip("av")
    from tests.helpers import clip_bytes

    url, _ = server
    clip = clip_bytes(600, size=(96, 64), rate=30)  # 20 s, every frame analysed at fps=30
    before = _inferences(url, "hourglass")
    with httpx2.Client(timeout=30) as client:
        with client.stream("POST", f"{url}/pose/video", params={"fps": 30, "detect": "false"},
                           files={"video": ("c.mp4", clip, "video/mp4")}) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            next(lines), next(lines)  # two frames answered, then the client goes away
    time.sleep(1.0)
    settled = _inferences(url, "hourglass")
    time.sleep(1.5)
    after = _inferences(url, "hourglass")
    assert after == settled, "frames are still being analysed for a client that left"
    assert settled - before < 300  # stopped long before the clip's 600 frames
    # and the clip slot came back: the next clip is served
    r = httpx2.post(f"{url}/pose/video", params={"detect": "false"}, files={"video": ("c.mp4", clip_bytes(6), "video/mp4")},
                   timeout=30)
    assert r.status_code == 200 and '"summary"' in r.text
