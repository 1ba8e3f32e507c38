"""Issue #12's API: every person in a photo, one batched pose run, no invented skeletons."""
from __future__ import annotations

import asyncio
import io
import shutil

import numpy as np
import pytest
from PIL import Image

from tests.helpers import DATA, image_bytes

TWO_PLAYERS = DATA / "lsp" / "images" / "im1001.jpg"  # two footballers (LSP test photo)
needs_photo = pytest.mark.skipif(not TWO_PLAYERS.exists(), reason="../shared datasets not present")


def post(client, data: bytes, path="/pose", ctype="image/png", **params):
    return client.post(path, params=params, files={"image": ("p", data, ctype)})


def png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def person_free_images() -> dict[str, bytes]:
    rng = np.random.default_rng(3)
    yy, xx = np.mgrid[0:240, 0:320]
    stripes = (((xx // 12 + yy // 12) % 2) * 200 + 30).astype(np.uint8)
    return {"flat": png(np.full((240, 320, 3), 128, np.uint8)),
            "noise": png(rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)),
            "texture": png(np.stack([stripes, stripes[::-1], np.full_like(stripes, 90)], -1))}


@pytest.mark.parametrize("kind", ["flat", "noise", "texture"])
def test_person_free_images_return_no_person_and_no_skeleton(client, kind):
    r = post(client, person_free_images()[kind])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["persons"] == [] and body["keypoints"] is None and body["crop"] is None
    assert body["heatmaps"] is None and body["timing_ms"]["detect"] > 0


@needs_photo
def test_a_photo_of_two_players_returns_both_with_a_skeleton_each(client):
    body = post(client, TWO_PLAYERS.read_bytes(), ctype="image/jpeg", heatmaps="none", stages="true").json()
    persons = body["persons"]
    assert len(persons) == 2
    centres = sorted(p["bbox"][0] + p["bbox"][2] / 2 for p in persons)
    assert centres[0] < 100 < 200 < centres[1]  # the left player (x≈70) and the right one (x≈250)
    for p in persons:
        assert 0.35 <= p["score"] <= 1 and len(p["keypoints"]) == 19 and len(p["stages"]) == 2
        x, y, w, h = p["bbox"]
        x0, y0, side = p["crop"]
        assert side == pytest.approx(1.25 * max(w, h), rel=1e-3)
    first = persons[0]
    assert body["keypoints"] == first["keypoints"] and body["crop"] == first["crop"]
    prominence = [p["score"] * p["bbox"][2] * p["bbox"][3] for p in persons]
    assert prominence == sorted(prominence, reverse=True)
    few = post(client, TWO_PLAYERS.read_bytes(), ctype="image/jpeg", max_persons=1).json()
    assert len(few["persons"]) == 1 and few["persons"][0]["bbox"] == first["bbox"]
    assert post(client, TWO_PLAYERS.read_bytes(), ctype="image/jpeg", min_person_score=0.99).json()["persons"] == []


@needs_photo
def test_compare_detects_once_and_every_model_sees_the_same_people(client):
    body = post(client, TWO_PLAYERS.read_bytes(), "/pose/compare", "image/jpeg").json()
    assert body["persons_detected"] == 2
    boxes = {tuple(tuple(p["bbox"]) for p in r["persons"]) for r in body["results"]}
    assert len(boxes) == 1 and len(next(iter(boxes))) == 2


@needs_photo
def test_render_draws_every_person(client):
    r = post(client, TWO_PLAYERS.read_bytes(), "/pose/render", "image/jpeg")
    assert r.status_code == 200 and r.headers["x-persons"] == "2"
    drawn = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), np.int16)
    plain = np.asarray(Image.open(TWO_PLAYERS).convert("RGB"), np.int16)
    changed = np.abs(drawn - plain).sum(2) > 120
    assert changed[:, :130].sum() > 100 and changed[:, 170:].sum() > 100  # both halves drawn on
    # each player's limbs by side: the right-side red and the left-side green on both halves
    red = (drawn[..., 0] > 200) & (drawn[..., 1] < 90) & (drawn[..., 2] < 90)
    green = (drawn[..., 0] < 90) & (drawn[..., 1] > 170) & (drawn[..., 2] < 120)
    for half in (slice(0, 130), slice(170, None)):
        assert red[:, half].sum() > 10 and green[:, half].sum() > 10


def test_every_person_goes_through_the_pose_model_in_batched_runs(client):
    from app.metrics import Metrics
    from app.pipeline import PersonBox, run_pose
    from app.uploads import Upload

    m = client.app.state.registry.models["cpm"]
    runs: list[tuple[int, ...]] = []
    real = m.pool.run

    async def spy(feeds, timeout_s):
        result = await real(feeds, timeout_s)
        runs.append(feeds()["image"].shape)
        return result

    m.pool.run = spy
    try:
        upload = Upload(image_bytes(size=(300, 200)), max_pixels=10**6, max_side=2048, large_pixels=10**6)
        people = [PersonBox((10, 10, 50, 120)), PersonBox((100, 20, 60, 150), 0.9), PersonBox((200, 5, 80, 190), 0.6)]
        settings = client.app.state.settings
        body = asyncio.run(run_pose(m, upload, people, "array", True, 0.0, 0.0, settings, Metrics()))
    finally:
        m.pool.run = real
    lanes = len(m.pool.sessions)  # the crops spread evenly over the pool's sessions, run at once
    per_run = -(-3 // lanes)
    assert sorted(runs, reverse=True) == [(min(per_run, 3 - i), 3, 32, 32) for i in range(0, 3, per_run)]
    assert [p.score for p in body.persons] == [None, 0.9, 0.6]
    for p, person in zip(people, body.persons):
        x, y, w, h = p.box
        assert person.crop[2] == pytest.approx(1.25 * max(w, h))
        assert person.heatmaps is not None and len(person.stages) == 3

    # a crowd runs in chunks of at most max_batch crops, with the same answers person by person
    runs.clear()
    m.pool.run = spy
    try:
        chunked = asyncio.run(run_pose(m, upload, people, "array", True, 0.0, 0.0,
                                       settings.model_copy(update={"max_batch": 2}), Metrics()))
    finally:
        m.pool.run = real
    assert sorted(runs, reverse=True) == [(2, 3, 32, 32), (1, 3, 32, 32)]
    for a, b in zip(body.persons, chunked.persons):
        assert [(k.x, k.y) for k in a.keypoints] == pytest.approx([(k.x, k.y) for k in b.keypoints], abs=0.01)
        assert np.allclose(a.heatmaps.maps, b.heatmaps.maps, atol=1e-3)

    # The response bytes, float maps written straight from their arrays, say what pydantic's own
    # JSON says through Python lists: the same numbers, 4 decimals.
    import json

    from app.routers.pose import json_response

    sent = json.loads(json_response(body).body)
    assert sent == json.loads(body.model_dump_json())
    maps = np.array(sent["persons"][1]["heatmaps"]["maps"])
    assert maps.shape == (19, 8, 8) and np.array_equal(maps, np.round(maps, 4)) and maps.max() > 0


@pytest.mark.parametrize("params,field", [
    ({"min_person_score": "-0.1"}, "min_person_score"), ({"min_person_score": "1.5"}, "min_person_score"),
    ({"max_persons": "0"}, "max_persons"), ({"max_persons": "100000"}, "max_persons"),
    ({"detect": "perhaps"}, "detect")])
def test_bad_detection_parameters_are_422_naming_the_field(client, params, field):
    r = post(client, image_bytes("PNG"), **params)
    assert r.status_code == 422
    assert any(field in e["loc"] for e in r.json()["detail"])


def test_the_detector_is_listed_ready_and_measured(client):
    detector = client.get("/models").json()["detector"]
    assert detector["id"] == "person_detector" and detector["classes"] == ["person"]
    assert detector["licence"] == "Apache-2.0" and 0 < detector["score_threshold"] < 1
    assert "person_detector" not in [m["id"] for m in client.get("/models").json()["models"]]
    post(client, image_bytes("PNG"))
    assert 'poseserve_inference_seconds_count{model="person_detector"}' in client.get("/metrics").text


def test_without_a_detector_a_whole_photo_is_a_clear_503_and_boxes_still_work(model_dir, tmp_path):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    for f in model_dir.glob("cpm.*"):
        shutil.copy(f, tmp_path)
    with TestClient(create_app(Settings(model_dir=tmp_path, pool_size=1, intra_op_threads=1,
                                        default_model="cpm"))) as c:
        r = post(c, image_bytes("PNG"))
        assert r.status_code == 503 and "bbox" in r.json()["detail"] and "detect=false" in r.json()["detail"]
        assert post(c, image_bytes("PNG"), bbox="10,10,50,80").status_code == 200
        assert post(c, image_bytes("PNG"), detect="false").status_code == 200
        assert c.get("/models").json()["detector"] is None


def test_a_crowds_runs_share_one_fate():
    """When one of a crowd's runs fails (say, shed for overload), the others are cancelled
    rather than left running for an answer nobody reads, and the failure is what is raised."""
    from app.pipeline import all_or_none

    cancelled = []

    async def slow(i: int) -> int:
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            cancelled.append(i)
            raise
        return i

    async def fails() -> int:
        await asyncio.sleep(0.01)
        raise RuntimeError("shed")

    async def main() -> None:
        assert await all_or_none([asyncio.sleep(0, result=1), asyncio.sleep(0.01, result=2)]) == [1, 2]
        with pytest.raises(RuntimeError, match="shed"):
            await all_or_none([slow(0), fails(), slow(2)])

    asyncio.run(main())
    assert sorted(cancelled) == [0, 2]
