"""``POST /pose/video``: generated clips in, a line per analysed frame out, people tracked;
limits and bad files answered with 4xx before any decoding; the tracker and smoother alone."""
from __future__ import annotations

import io
import json

import numpy as np
import pytest

pytest.importorskip("av")

from app.tracking import PoseTracker, iou  # noqa: E402
from tests.helpers import clip_bytes  # noqa: E402


def post_clip(client, data: bytes, name: str = "c.mp4", ctype: str = "video/mp4", **params):
    return client.post("/pose/video", params=params, files={"video": (name, data, ctype)})


def lines(response) -> tuple[list[dict], dict]:
    rows = [json.loads(line) for line in response.text.splitlines()]
    assert "summary" in rows[-1] and all("summary" not in r for r in rows[:-1])
    return rows[:-1], rows[-1]["summary"]


@pytest.mark.parametrize("fmt, codec, name, ctype", [("mp4", "mpeg4", "c.mp4", "video/mp4"),
                                                     ("webm", "libvpx-vp9", "c.webm", "video/webm"),
                                                     ("gif", "gif", "c.gif", "image/gif"),
                                                     ("mov", "mpeg4", "c.mov", "video/quicktime")])
def test_every_sampled_frame_answers_one_line_with_tracked_people(client, fmt, codec, name, ctype):
    r = post_clip(client, clip_bytes(20, fmt, codec, rate=10), name, ctype, detect="false", fps=5)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/x-ndjson")
    frames, summary = lines(r)
    # 20 frames at 10 fps = 2 s; analysed at 5 fps: every second frame
    assert [f["frame"] for f in frames] == list(range(0, 20, 2))
    assert [f["time_s"] for f in frames] == pytest.approx([i / 10 for i in range(0, 20, 2)], abs=0.011)
    assert summary["frames"] == 10 and summary["tracks"] == 1 and summary["error"] is None
    assert summary["fps"] == 5 and (summary["width"], summary["height"]) == (160, 120)
    for f in frames:
        (person,) = f["persons"]
        assert person["track_id"] == 1 and len(person["keypoints"]) == 19 and len(person["coco_keypoints"]) == 51


def test_default_rate_is_the_clips_capped_at_15(client):
    _, summary = lines(post_clip(client, clip_bytes(30, rate=30), detect="false"))
    assert summary["fps"] == 15 and summary["frames"] == 15
    _, summary = lines(post_clip(client, clip_bytes(10, rate=5), detect="false"))
    assert summary["fps"] == 5 and summary["frames"] == 10


def test_smoothing_changes_the_keypoints_and_says_so(client):
    data = clip_bytes(20, rate=10)
    raw, _ = lines(post_clip(client, data, detect="false"))
    smooth, summary = lines(post_clip(client, data, detect="false", smooth="true"))
    assert summary["smooth"] is True
    first = [(k["x"], k["y"]) for k in smooth[0]["persons"][0]["keypoints"]]
    assert first == [(k["x"], k["y"]) for k in raw[0]["persons"][0]["keypoints"]]  # a filter starts where it is
    later = np.array([[k["x"], k["y"]] for f in smooth[1:] for k in f["persons"][0]["keypoints"]])
    assert np.abs(later - np.array([[k["x"], k["y"]] for f in raw[1:] for k in f["persons"][0]["keypoints"]])).max() > 0.5


@pytest.mark.parametrize("data, ctype, status", [
    (b"certainly not a video", "video/mp4", 415),
    (b"\x00" * 5000, "application/octet-stream", 415),
    (b"text", "text/plain", 415),
])
def test_bad_files_are_4xx_with_a_reason(client, data, ctype, status):
    r = post_clip(client, data, ctype=ctype)
    assert r.status_code == status and r.json()["detail"]


def test_a_file_without_a_video_stream_is_422(client):
    import av

    buf = io.BytesIO()
    with av.open(buf, "w", format="wav") as container:
        stream = container.add_stream("pcm_s16le", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 800), np.int16), format="s16", layout="mono")
        frame.sample_rate = 8000
        for packet in stream.encode(frame):
            container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    r = post_clip(client, buf.getvalue(), "a.wav", "audio/wav")
    assert r.status_code in (415, 422)  # an audio content type is refused before opening it
    r = post_clip(client, buf.getvalue(), "a.bin", "application/octet-stream")
    assert r.status_code == 422 and "no video stream" in r.json()["detail"]


@pytest.fixture(scope="module")
def limited(model_dir):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    settings = Settings(model_dir=model_dir, pool_size=1, intra_op_threads=1, video_max_side=128,
                        video_max_seconds=3, video_max_frames=12, video_max_bytes=200_000)
    with TestClient(create_app(settings)) as c:
        yield c


@pytest.mark.parametrize("clip, params, words", [
    (dict(size=(160, 120)), {}, "POSE_VIDEO_MAX_SIDE"),
    (dict(frames=40, size=(96, 64), rate=10), {}, "POSE_VIDEO_MAX_SECONDS"),
    (dict(frames=20, size=(96, 64), rate=10), {"fps": 10}, "POSE_VIDEO_MAX_FRAMES"),
])
def test_clips_over_a_limit_are_413_before_decoding(limited, clip, params, words):
    r = post_clip(limited, clip_bytes(**clip), detect="false", **params)
    assert r.status_code == 413 and words in r.json()["detail"]


def test_within_the_limits_the_same_server_answers(limited):
    r = post_clip(limited, clip_bytes(20, size=(96, 64), rate=10), detect="false", fps=5)
    assert r.status_code == 200 and lines(r)[1]["frames"] == 10


def test_an_upload_over_the_video_size_limit_is_413(limited):
    r = post_clip(limited, b"\x00" * 300_000)
    assert r.status_code == 413 and "limit" in r.json()["detail"]


def test_unknown_parameters_are_refused_on_video_too(client):
    r = post_clip(client, clip_bytes(4), detect="false", smoothing="true")
    assert r.status_code == 422 and "smoothing" in r.text


def test_the_video_route_is_in_the_openapi_schema_with_an_example(client):
    op = client.get("/openapi.json").json()["paths"]["/pose/video"]["post"]
    content = op["responses"]["200"]["content"]["application/x-ndjson"]
    first, last = (json.loads(line) for line in content["example"].splitlines())
    assert first["persons"][0]["track_id"] == 1 and "summary" in last
    assert {p["name"] for p in op["parameters"]} >= {"model", "fps", "smooth", "flip", "detect", "max_persons"}


def test_tracks_follow_people_by_box_and_keypoints():
    tracker = PoseTracker()
    pose = np.array([[0.0, 0.0], [10.0, 40.0], [20.0, 80.0]])
    left, right = [10.0, 10.0, 30.0, 90.0], [200.0, 10.0, 30.0, 90.0]
    ids = tracker.update(0.0, [left, right], [pose + 10, pose + 200])
    assert ids == [1, 2]
    for step in range(1, 10):  # they walk towards each other, listed in either order
        l_box = [10.0 + 8 * step, 10.0, 30.0, 90.0]
        r_box = [200.0 - 8 * step, 10.0, 30.0, 90.0]
        boxes, points = [r_box, l_box], [pose + r_box[0], pose + l_box[0]]
        assert tracker.update(step / 10, boxes, points) == [2, 1]
    assert tracker.update(1.0, [[500.0, 10.0, 30.0, 90.0]], [pose + 500]) == [3]  # someone new
    assert tracker.update(2.5, [[10.0, 10.0, 30.0, 90.0]], [pose + 10]) == [4]  # after a long gap: new
    assert tracker.seen == 4
    assert iou(left, left) == 1 and iou(left, right) == 0


def test_one_euro_smoothing_calms_jitter_and_follows_motion():
    tracker = PoseTracker(smooth=True, fps=15)
    rng = np.random.default_rng(0)
    box = [0.0, 0.0, 100.0, 100.0]
    raw, smooth = [], []
    for i in range(60):
        t = i / 15
        point = np.array([[50.0, 50.0]]) + rng.normal(0, 2, (1, 2)) + ([[200.0, 0.0]] if i >= 30 else 0)
        (track,) = tracker.update(t, [box], [point])
        raw.append(point[0])
        smooth.append(tracker.smoothed(track, t, point)[0])
    raw, smooth = np.array(raw), np.array(smooth)
    assert smooth[5:30].std(0).max() < 0.6 * raw[5:30].std(0).max()  # still: less jitter
    assert abs(smooth[40, 0] - 250) < 10  # moved: caught up within 10 frames


@pytest.fixture(scope="module")
def shipped():
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    with TestClient(create_app(Settings(pool_size=1, intra_op_threads=2))) as c:
        yield c


@pytest.mark.slow
def test_two_walking_people_keep_their_ids_and_their_keypoints_follow_them(shipped):
    """Real models on a clip of two real athletes (an LSP test photo) walking apart."""
    from PIL import Image

    from tests.helpers import DATA

    photo = DATA / "lsp" / "images" / "im1500.jpg"
    if not photo.exists():
        pytest.skip("LSP dataset not present")
    person = np.asarray(Image.open(photo).convert("RGB"))  # 195 x 249, one athlete
    h, w = person.shape[:2]
    step = 6

    def draw(i: int) -> np.ndarray:
        frame = np.full((270, 640, 3), 120, np.uint8)
        frame[10:10 + h, 60 + step * i: 60 + step * i + w] = person            # walks right
        frame[10:10 + h, 380 - step * i: 380 - step * i + w] = person[:, ::-1]  # mirrored, walks left
        return frame

    r = post_clip(shipped, clip_bytes(12, size=(640, 270), rate=10, draw=draw))
    assert r.status_code == 200, r.text
    frames, summary = lines(r)
    assert summary["frames"] == 12 and summary["tracks"] == 2 and summary["error"] is None
    centre = {}  # track id → mean keypoint x per frame
    for f in frames:
        assert len(f["persons"]) == 2
        for p in f["persons"]:
            centre.setdefault(p["track_id"], []).append(np.mean([k["x"] for k in p["keypoints"]]))
    (a, xa), (b, xb) = sorted(centre.items(), key=lambda kv: kv[1][0])  # a starts on the left
    assert len(xa) == len(xb) == 12
    moved_a, moved_b = xa[-1] - xa[0], xb[-1] - xb[0]
    assert moved_a == pytest.approx(11 * step, abs=15) and moved_b == pytest.approx(-11 * step, abs=15)


def test_frames_are_turned_upright_as_players_show_them():
    from PIL import Image

    from app.video import upright

    stored = Image.new("RGB", (4, 2))
    stored.putpixel((0, 0), (255, 0, 0))  # top-left of the stored landscape frame
    # a phone held upright: display matrix -90 (shown turned 90° clockwise): portrait, red at top-right
    shown = upright(stored, -90)
    assert shown.size == (2, 4) and shown.getpixel((1, 0)) == (255, 0, 0)
    shown = upright(stored, 90)  # turned counterclockwise: red at bottom-left
    assert shown.size == (2, 4) and shown.getpixel((0, 3)) == (255, 0, 0)
    assert upright(stored, 180).getpixel((3, 1)) == (255, 0, 0)
    assert upright(stored, 0) is stored
