"""The HTTP contract of issue #2, endpoint by endpoint, on random-weight models."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from models.transforms import CropBox
from tests.helpers import ARCHITECTURES, image_bytes

# Written out, not imported: the API's joint names are a contract with users.
JOINT_NAMES = ["right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
             "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow",
             "left_wrist", "neck", "head_top", "nose", "left_eye", "right_eye", "left_ear", "right_ear"]
COCO_KEYPOINT_NAMES = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
                       "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip",
                       "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]


def post(client, data: bytes, name="p.jpg", ctype="image/jpeg", **params):
    return client.post("/pose", params=params, files={"image": (name, data, ctype)})


@pytest.mark.parametrize("model", ARCHITECTURES)
def test_pose_returns_19_named_keypoints_inside_the_crop(client, model):
    r = post(client, image_bytes(size=(120, 160)), model=model, bbox="20,30,60,100")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == model and body["image"] == {"width": 120, "height": 160}
    assert [k["name"] for k in body["keypoints"]] == JOINT_NAMES
    assert [k["id"] for k in body["keypoints"]] == list(range(19))
    coco = np.array(body["persons"][0]["coco_keypoints"]).reshape(17, 3)
    by_name = {k["name"]: k for k in body["keypoints"]}
    for c, name in enumerate(COCO_KEYPOINT_NAMES):  # the COCO-17 array is the same pose, in COCO's order
        assert tuple(coco[c, :2]) == (by_name[name]["x"], by_name[name]["y"])
        assert coco[c, 2] == (1.0 if by_name[name]["score"] is None else by_name[name]["score"])
    x0, y0, side = body["crop"]
    assert (x0, y0, side) == pytest.approx((50 - 62.5, 80 - 62.5, 125.0))  # 1.25 margin, square
    for k in body["keypoints"]:
        assert x0 - 1 <= k["x"] <= x0 + side + 1 and y0 - 1 <= k["y"] <= y0 + side + 1
    heat = body["heatmaps"]
    assert heat["source"] == ("rendered" if model in ("deeppose", "ief") else "predicted")
    scores = [k["score"] for k in body["keypoints"]]
    assert all(s is None for s in scores) if model in ("deeppose", "ief") else all(
        isinstance(s, float) for s in scores)
    assert set(body["timing_ms"]) == {"read", "decode", "detect", "preprocess", "inference", "postprocess", "total"}
    assert body["timing_ms"]["decode"] > 0, "the JPEG's pixels were decoded for the crop"
    assert body["persons"][0]["score"] is None and body["persons"][0]["bbox"] == [20, 30, 60, 100]
    assert body["persons"][0]["keypoints"] == body["keypoints"] and body["timing_ms"]["detect"] == 0


def test_heatmap_affine_maps_the_peak_cell_onto_the_keypoint(client):
    """What the docs promise: A @ [col, row, 1] puts a heatmap cell on the image."""
    body = post(client, image_bytes(size=(200, 150)), model="hourglass", heatmaps="array",
                bbox="40,20,80,110").json()
    a = np.array(body["heatmaps"]["to_image"])
    maps = np.array(body["heatmaps"]["maps"])
    assert maps.shape == (19, body["heatmaps"]["height"], body["heatmaps"]["width"])
    cell = (body["crop"][2] / body["heatmaps"]["width"])
    for k, kp in enumerate(body["keypoints"]):
        row, col = np.unravel_index(maps[k].argmax(), maps[k].shape)
        x, y = a @ np.array([col, row, 1.0])
        # the sub-cell step (DARK's, clamped to a cell) moves a keypoint at most a cell from its
        # peak cell; the answer's coordinates are rounded to 0.01 px
        assert abs(x - kp["x"]) <= cell + 0.01 and abs(y - kp["y"]) <= cell + 0.01


def test_png_heatmaps_decode_to_the_array_values(client):
    data = image_bytes(size=(90, 90))
    png = post(client, data, model="cpm", detect="false").json()["heatmaps"]
    arr = post(client, data, model="cpm", heatmaps="array", detect="false").json()["heatmaps"]
    assert png["format"] == "png" and len(png["maps_png"]) == 19
    first = png["maps_png"][0]
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(first["png"]))), np.float64)
    values = first["min"] + pixels / 255 * (first["max"] - first["min"])
    assert np.abs(values - np.array(arr["maps"][0])).max() <= (first["max"] - first["min"]) / 255 + 1e-3


def test_heatmaps_none_and_stages(client):
    body = post(client, image_bytes(), model="ief", heatmaps="none", stages="true", detect="false").json()
    assert body["heatmaps"] is None
    assert [s["stage"] for s in body["stages"]] == [1, 2, 3, 4]  # y0 + 3 corrections
    assert body["stages"][-1]["keypoints"] == [dict(k, score=None) for k in body["keypoints"]]


def test_detect_false_makes_the_whole_image_the_one_person(client):
    body = post(client, image_bytes(size=(100, 60)), model="tompson", detect="false").json()
    assert body["crop"] == [0.0, -20.0, 100.0]
    assert len(body["persons"]) == 1 and body["persons"][0]["score"] is None
    assert body["persons"][0]["bbox"] == [0.0, 0.0, 100.0, 60.0]
    assert body["timing_ms"]["detect"] == 0


def test_default_model_is_hourglass(client):
    assert post(client, image_bytes()).json()["model"] == "hourglass"


def test_keypoints_follow_the_exif_orientation(client):
    img = Image.new("RGB", (80, 40), (200, 60, 60))
    exif = Image.Exif()
    exif[0x0112] = 8
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    assert post(client, buf.getvalue()).json()["image"] == {"width": 40, "height": 80}


@pytest.mark.parametrize("params,status,field", [
    ({"model": "alexnet"}, 404, None),
    ({"bbox": "1,2,3"}, 422, "bbox"),
    ({"bbox": "0,0,0,10"}, 422, "bbox"),
    ({"bbox": "500,500,10,10"}, 422, "bbox"),
    ({"bbox": "a,b,c,d"}, 422, "bbox"),
    ({"bbox": "nan,0,10,10"}, 422, "bbox"),
    ({"bbox": "0,0,1e30,1e30"}, 422, "bbox"),  # was a 500 (OverflowError while cropping)
    ({"bbox": "10,10,2,50"}, 422, "bbox"),  # under 4 px wide
    ({"heatmaps": "jpeg"}, 422, "heatmaps"),
    ({"stages": "maybe"}, 422, "stages"),
])
def test_bad_parameters_are_4xx_json(client, params, status, field):
    r = post(client, image_bytes(), **params)
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    if field:
        assert any(field in e["loc"] for e in detail)


@pytest.mark.parametrize("data,ctype,status", [
    (b"", "image/jpeg", 400),
    (b"\x00garbage" * 10, "image/png", 400),
    (image_bytes("JPEG")[:300], "image/jpeg", 400),
    (b"hello", "text/plain", 415),
    (b"%PDF-1.4", "application/pdf", 415),
])
def test_bad_uploads_are_4xx_json(client, data, ctype, status):
    r = post(client, data, ctype=ctype)
    assert r.status_code == status and "detail" in r.json()


def test_missing_file_is_422(client):
    assert client.post("/pose").status_code == 422


def test_oversized_upload_is_413(client):
    r = post(client, b"\xff" * 2_200_000)
    assert r.status_code == 413 and "detail" in r.json()


def test_too_many_pixels_is_413(client):
    r = post(client, image_bytes("PNG", size=(2100, 2000)), ctype="image/png")
    assert r.status_code == 413 and "limit" in r.json()["detail"]


def test_models_lists_every_model_with_its_providers(client):
    body = client.get("/models").json()
    assert sorted(m["id"] for m in body["models"]) == sorted(ARCHITECTURES)
    for m in body["models"]:
        assert m["keypoints"] == JOINT_NAMES and m["providers"] == ["CPUExecutionProvider"]
        assert [m["keypoints"][i] for i in m["coco_order"]] == COCO_KEYPOINT_NAMES
        assert m["params"] > 0 and m["input_size"] == 32 and m["skeleton"]
        assert m["trained_stages"] == m["stages"] >= 1  # no release cut these graphs short
    assert body["unavailable"] == {}


def test_health_and_readiness(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["ready"] is True
    assert set(r.json()["models"]) == set(ARCHITECTURES) | {"person_detector"}


def test_metrics_count_requests_and_inference(client):
    post(client, image_bytes(), model="cpm")
    text = client.get("/metrics").text
    assert 'poseserve_requests_total{method="POST",route="/pose",status="200"}' in text
    assert 'poseserve_inference_seconds_count{model="cpm"}' in text


def test_request_id_is_echoed(client):
    r = client.get("/healthz", headers={"x-request-id": "abc123"})
    assert r.headers["x-request-id"] == "abc123"


def test_openapi_documents_the_contract(client):
    spec = client.get("/openapi.json").json()
    op = spec["paths"]["/pose"]["post"]
    assert {p["name"] for p in op["parameters"]} >= {"model", "bbox", "heatmaps", "stages"}
    assert "PoseResponse" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200


def test_cors_is_off_by_default(client):
    r = client.options("/pose", headers={"Origin": "http://evil.example",
                                         "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in r.headers


def test_crop_box_margin_matches_training():
    from models.transforms import CROP_MARGIN  # the service reads it from the manifest

    assert CropBox.around(0, 0, 10, 20, CROP_MARGIN).side == 25.0


def test_large_jpeg_with_a_small_box_keeps_original_coordinates(client):
    """JPEG draft decoding must not leak the reduced scale into the response."""
    body = post(client, image_bytes("JPEG", size=(2000, 1600)), model="hourglass",
                bbox="1000,600,200,400", heatmaps="none").json()
    assert body["image"] == {"width": 2000, "height": 1600}
    assert body["crop"] == [850.0, 550.0, 500.0]
    assert all(840 <= k["x"] <= 1360 and 540 <= k["y"] <= 1060 for k in body["keypoints"])


def test_compare_runs_every_model_on_one_image(client):
    r = client.post("/pose/compare", params={"stages": "true", "bbox": "10,10,60,100"},
                    files={"image": ("p.png", image_bytes("PNG"), "image/png")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert sorted(x["model"] for x in body["results"]) == sorted(ARCHITECTURES)
    for x in body["results"]:
        assert len(x["keypoints"]) == 19 and x["heatmaps"] is None and x["stages"]
        assert x["timing_ms"]["inference"] > 0
    single = post(client, image_bytes("PNG"), ctype="image/png", model="cpm", bbox="10,10,60,100").json()
    cpm = next(x for x in body["results"] if x["model"] == "cpm")
    assert cpm["keypoints"] == single["keypoints"]


def test_render_returns_the_photo_with_a_skeleton(client):
    data = image_bytes("JPEG", size=(150, 200))
    r = client.post("/pose/render", params={"model": "tompson", "detect": "false"},
                    files={"image": ("p.jpg", data, "image/jpeg")})
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    drawn = np.asarray(Image.open(io.BytesIO(r.content)).convert("RGB"), np.int16)
    plain = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.int16)
    assert drawn.shape == plain.shape
    assert (np.abs(drawn - plain).sum(2) > 120).sum() > 50, "no skeleton drawn"


def test_index_page_is_served_and_links_the_docs(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'href="/docs"' in r.text and '<script src="/static/app.js">' in r.text
    assert "/pose/compare" in client.get("/static/app.js").text


def test_busy_server_answers_503_with_retry_after(model_dir):
    """Every session busy and the expected wait over the limit: 503 at once with the honest
    Retry-After (the backlog's expected drain time beyond the limit), counted in /metrics."""
    import threading

    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.pool import SessionPool
    from app.settings import Settings

    release = threading.Event()

    class Blocking:
        def __init__(self, real):
            self.real = real

        def run(self, names, feeds):
            release.wait(10)
            return self.real.run(names, feeds)

        def get_providers(self):
            return self.real.get_providers()

    settings = Settings(model_dir=model_dir, pool_size=1, intra_op_threads=1, max_queue=0)
    with TestClient(create_app(settings)) as c:
        model = c.app.state.registry.models["hourglass"]
        model.pool = SessionPool([Blocking(model.pool.sessions[0])], queue_timeout_s=5, run_s=20)
        results = []
        first = threading.Thread(target=lambda: results.append(post(c, image_bytes(), detect="false").status_code))
        first.start()
        for _ in range(100):  # wait until the first request holds the only session
            if model.pool.busy:
                break
            threading.Event().wait(0.02)
        r = post(c, image_bytes(), detect="false")
        release.set()
        first.join(10)
        assert r.status_code == 503 and r.headers["retry-after"] == "15"
        assert results == [200]
        assert 'poseserve_rejected_total{model="hourglass",reason="busy"} 1.0' in c.get("/metrics").text


def test_an_unexpected_error_is_a_generic_500_without_a_trace(model_dir, monkeypatch):
    from fastapi.testclient import TestClient

    from app import pipeline as pose_module
    from app.main import create_app
    from app.settings import Settings

    def broken(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(pose_module, "keypoints", broken)
    with TestClient(create_app(Settings(model_dir=model_dir, pool_size=1, intra_op_threads=1)),
                    raise_server_exceptions=False) as c:
        r = post(c, image_bytes(), detect="false")
    assert r.status_code == 500
    assert "secret" not in r.text and "Traceback" not in r.text
    assert r.json()["detail"].startswith("internal error (request id ")


def test_cors_can_be_enabled_for_listed_origins(model_dir):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    app = create_app(Settings(model_dir=model_dir, pool_size=1, intra_op_threads=1,
                              cors_origins=["https://ui.example"]))
    with TestClient(app) as c:
        ok = c.options("/pose", headers={"Origin": "https://ui.example", "Access-Control-Request-Method": "POST"})
        other = c.options("/pose", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert ok.headers["access-control-allow-origin"] == "https://ui.example"
    assert "access-control-allow-origin" not in other.headers


@pytest.mark.parametrize("given, kept", [
    ("abc-123_X.y:z", True), ("a" * 64, True), ("a" * 65, False), ("x\r\nforged log line", False),
    ("<script>", False), ("", False)])
def test_request_ids_are_echoed_only_when_they_are_plain_ids(client, given, kept):
    r = client.get("/healthz", headers={"x-request-id": given} if given else {})
    echoed = r.headers["x-request-id"]
    assert (echoed == given) is kept
    assert len(echoed) <= 64 and echoed.replace("-", "").replace("_", "").replace(".", "").replace(":", "").isalnum()


def test_a_normalised_box_is_refused_with_a_hint_to_use_pixels(client):
    r = post(client, image_bytes(size=(120, 160)), bbox="0.1,0.1,0.5,0.8")
    assert r.status_code == 422
    msg = r.json()["detail"][0]["msg"]
    assert "normalised" in msg and "120x160" in msg and r.json()["detail"][0]["loc"] == ["query", "bbox"]


def test_pages_carry_security_headers_and_docs_need_no_network(client):
    for path in ("/", "/docs"):
        r = client.get(path)
        csp = r.headers["content-security-policy"]
        assert r.status_code == 200 and r.headers["x-content-type-options"] == "nosniff"
        assert "frame-ancestors 'none'" in csp and "script-src 'self'" in csp and "unsafe-inline" not in csp.split(
            "style-src")[0]
        assert "<script>" not in r.text, "no inline scripts: the policy allows none"
        assert "http://" not in r.text and "https://" not in r.text, "every asset from this server"
    for asset in ("/docs/assets/swagger-ui-bundle.js", "/docs/assets/swagger-ui.css", "/static/docs.js",
                  "/static/app.js"):
        assert client.get(asset).status_code == 200, asset
    assert client.get("/healthz").headers["x-content-type-options"] == "nosniff"


def test_the_demo_page_script_never_parses_strings_as_html_and_encodes_queries():
    """Manifest strings (model ids, joint names, papers) reach the page: they must be text,
    and query strings must be built by URLSearchParams, never by concatenation."""
    import re

    from tests.helpers import ROOT

    js = (ROOT / "app" / "static" / "app.js").read_text()
    assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write", js)
    assert "textContent" in js
    for call in re.findall(r"post\(`([^`]*)`\)", js):
        assert re.fullmatch(r"/pose[/a-z]*\?\$\{query\(\{[^}]*\}\)\}", call), call
    assert "new URLSearchParams(params)" in js


@pytest.mark.parametrize("route", ["/pose", "/pose/compare", "/pose/render"])
def test_a_misspelt_query_parameter_is_422_naming_it_and_the_accepted_ones(client, route):
    r = client.post(route, params={"modle": "cpm", "detect": "false"},
                    files={"image": ("p.jpg", image_bytes(), "image/jpeg")})
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["query", "modle"] and "detect" in error["msg"]


def test_an_option_sent_as_a_form_field_is_422_not_ignored(client):
    r = client.post("/pose", params={"detect": "false"}, data={"model": "cpm"},
                    files={"image": ("p.jpg", image_bytes(), "image/jpeg")})
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["loc"] == ["body", "model"] and "query string" in error["msg"]
    assert post(client, image_bytes(), model="cpm", detect="false").status_code == 200


def test_each_keypoint_says_whether_it_lies_inside_the_image(client):
    """A box at the image's corner makes a crop that reaches beyond the image, so the
    (random-weight) model places some joints outside it: those say in_image=false."""
    body = post(client, image_bytes(size=(120, 160)), model="hourglass", heatmaps="none",
                bbox="0,0,40,60", stages="true").json()
    points = body["keypoints"] + [k for s in body["stages"] for k in s["keypoints"]]
    for k in points:
        assert k["in_image"] == (0 <= k["x"] <= 120 and 0 <= k["y"] <= 160), k
    assert any(not k["in_image"] for k in points) and any(k["in_image"] for k in points)


def test_compare_runs_the_models_asked_in_order_with_heatmaps_when_asked(client):
    files = {"image": ("p.png", image_bytes("PNG"), "image/png")}
    r = client.post("/pose/compare", params={"models": "tompson,cpm", "bbox": "10,10,60,100", "heatmaps": "png"},
                    files=files)
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert [x["model"] for x in results] == ["tompson", "cpm"]
    assert all(len(x["heatmaps"]["maps_png"]) == 19 for x in results)
    r = client.post("/pose/compare", params={"models": "cpm,nope", "bbox": "10,10,60,100"}, files=files)
    assert r.status_code == 404 and "nope" in r.json()["detail"]
    r = client.post("/pose/compare", params={"heatmaps": "jpeg", "bbox": "10,10,60,100"}, files=files)
    assert r.status_code == 422


@pytest.mark.parametrize("model", ["hourglass", "cpm"])
def test_flip_answers_the_mirror_image_with_the_mirrored_pose(client, model):
    """With the test-time flip, a photo and its mirror image are the same two passes, so
    their answers are exact mirrors (left and right swapped); without it they are not."""
    rgb = np.random.default_rng(3).integers(0, 255, (96, 128, 3), np.uint8)
    flip_perm = [JOINT_NAMES.index(n.replace("left", "@").replace("right", "left").replace("@", "right"))
                 for n in JOINT_NAMES]

    def answer(pixels: np.ndarray, **params) -> dict:
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, "PNG")
        r = post(client, buf.getvalue(), "m.png", "image/png", model=model, detect="false", heatmaps="none",
                 **params)
        assert r.status_code == 200, r.text
        return r.json()

    def mirror_gap(a: dict, b: dict) -> float:
        xa = np.array([k["x"] for k in a["keypoints"]])
        xb = np.array([k["x"] for k in b["keypoints"]])[flip_perm]
        ya = np.array([k["y"] for k in a["keypoints"]])
        yb = np.array([k["y"] for k in b["keypoints"]])[flip_perm]
        return float(max(np.abs(xa - (128 - xb)).max(), np.abs(ya - yb).max()))

    flipped = answer(rgb, flip="true"), answer(rgb[:, ::-1].copy(), flip="true")
    assert all(a["flip_test"] for a in flipped)
    assert mirror_gap(*flipped) < 0.05  # pixels; responses are rounded to 0.01
    plain = answer(rgb), answer(rgb[:, ::-1].copy())
    assert not any(a["flip_test"] for a in plain)  # the server's default: no flip
    assert mirror_gap(*plain) > 1.0
    models = {m["id"]: m for m in client.get("/models").json()["models"]}
    assert models[model]["flip_test"] is False
