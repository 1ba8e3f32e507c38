"""Startup faults: a broken model is reported as unavailable, never half-served."""
from __future__ import annotations

import json
import shutil

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.registry import StartupError
from app.settings import Settings
from tests.helpers import image_bytes


@pytest.fixture
def broken_dir(model_dir, tmp_path):
    """hourglass intact; cpm corrupt; tompson checksum mismatch; ief without ONNX;
    deeppose manifest claims the wrong input size; 'orphan' ONNX without a manifest."""
    for name in ("hourglass", "cpm", "tompson", "deeppose"):
        shutil.copy(model_dir / f"{name}.onnx", tmp_path)
        shutil.copy(model_dir / f"{name}.json", tmp_path)
    shutil.copy(model_dir / "ief.json", tmp_path)
    shutil.copy(model_dir / "cpm.onnx", tmp_path / "orphan.onnx")
    corrupt = b"not a protobuf" * 10
    (tmp_path / "cpm.onnx").write_bytes(corrupt)
    import hashlib

    cpm = json.loads((tmp_path / "cpm.json").read_text())
    cpm["sha256"] = hashlib.sha256(corrupt).hexdigest()  # checksum fine, graph corrupt
    (tmp_path / "cpm.json").write_text(json.dumps(cpm))
    with open(tmp_path / "tompson.onnx", "ab") as f:
        f.write(b"\0")
    dp = json.loads((tmp_path / "deeppose.json").read_text())
    dp["input"]["size"] = 64
    (tmp_path / "deeppose.json").write_text(json.dumps(dp))
    return tmp_path


def test_broken_models_are_unavailable_and_the_rest_serve(broken_dir):
    with TestClient(create_app(Settings(model_dir=broken_dir, pool_size=1, intra_op_threads=1))) as c:
        ready = c.get("/readyz")
        assert ready.status_code == 503
        failed = ready.json()["unavailable"]
        assert set(failed) == {"cpm", "tompson", "ief", "deeppose", "orphan"}
        assert "onnxruntime could not load" in failed["cpm"]
        every_reason = json.dumps([failed, c.get("/models").json()["unavailable"],
                                   c.post("/pose?model=cpm&detect=false",
                                          files={"image": ("a.png", image_bytes("PNG"), "image/png")}).json()])
        assert str(broken_dir) not in every_reason and "/tmp" not in every_reason, "no server paths"
        assert "sha256" in failed["tompson"]
        assert "missing ONNX" in failed["ief"]
        assert "manifest" in failed["deeppose"] and "64" in failed["deeppose"]
        assert "no manifest" in failed["orphan"]
        assert list(ready.json()["models"]) == ["hourglass"]
        assert [m["id"] for m in c.get("/models").json()["models"]] == ["hourglass"]
        files = {"image": ("a.png", image_bytes("PNG"), "image/png")}
        assert c.post("/pose?model=hourglass&detect=false", files=files).status_code == 200
        r = c.post("/pose?model=cpm&detect=false", files=files)
        assert r.status_code == 503 and "unavailable" in r.json()["detail"]


@pytest.mark.parametrize("layout", ["missing", "empty", "nothing servable"])
def test_a_model_dir_with_nothing_to_serve_stops_startup(tmp_path, layout, caplog):
    """An empty server would pass liveness and blame every client with 404s: refuse to start."""
    model_dir = tmp_path / "models"
    if layout != "missing":
        model_dir.mkdir()
    if layout == "nothing servable":
        (model_dir / "cpm.json").write_text("{}")
    with pytest.raises(StartupError), TestClient(create_app(Settings(model_dir=model_dir))):
        pass
    assert "not starting" in caplog.text and "POSE_ALLOW_EMPTY_MODEL_DIR" in caplog.text


def test_an_explicitly_allowed_empty_model_dir_starts_unready_and_says_why(tmp_path):
    with TestClient(create_app(Settings(model_dir=tmp_path, allow_empty_model_dir=True))) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 503
        r = c.post("/pose", files={"image": ("a.png", image_bytes("PNG"), "image/png")})
        assert r.status_code == 503 and r.json()["detail"] == "no pose model is loaded on this server"


def test_pool_and_threads_never_oversubscribe_the_cpu_quota(monkeypatch):
    import app.settings as s

    for cores in (1, 2, 3, 8, 16):
        monkeypatch.setattr(s, "cpu_quota", lambda c=cores: c)
        pool, threads = Settings().threads_and_pool()
        assert pool >= 1 and threads >= 1 and pool * threads <= cores
    monkeypatch.setattr(s, "cpu_quota", lambda: 8)
    assert Settings(pool_size=4).threads_and_pool() == (4, 1)
    assert Settings(intra_op_threads=2).threads_and_pool() == (4, 2)


def test_settings_come_from_pose_environment_variables(monkeypatch, tmp_path):
    monkeypatch.setenv("POSE_DEFAULT_MODEL", "cpm")
    monkeypatch.setenv("POSE_MODEL_DIR", str(tmp_path))
    monkeypatch.setenv("POSE_MAX_QUEUE", "3")
    s = Settings()
    assert (s.default_model, s.model_dir, s.max_queue) == ("cpm", tmp_path, 3)


def test_a_cuda_only_variant_is_skipped_on_cpu_not_failed(model_dir, tmp_path):
    """fp16 variants declare requires_provider: a CPU server lists them as skipped,
    stays ready, and answers a request for one with 404 and the reason."""
    for name in ("hourglass",):
        shutil.copy(model_dir / f"{name}.onnx", tmp_path)
        shutil.copy(model_dir / f"{name}.json", tmp_path)
    shutil.copy(model_dir / "hourglass.onnx", tmp_path / "hourglass-fp16.onnx")
    manifest = json.loads((model_dir / "hourglass.json").read_text())
    manifest.update(id="hourglass-fp16", onnx="hourglass-fp16.onnx", variant="fp16",
                    requires_provider="CUDAExecutionProvider")
    (tmp_path / "hourglass-fp16.json").write_text(json.dumps(manifest))
    with TestClient(create_app(Settings(model_dir=tmp_path, pool_size=1, intra_op_threads=1,
                                        device="cpu"))) as c:
        assert c.get("/readyz").status_code == 200
        listing = c.get("/models").json()
        assert [m["id"] for m in listing["models"]] == ["hourglass"]
        assert "CUDAExecutionProvider" in listing["skipped"]["hourglass-fp16"]
        assert listing["unavailable"] == {}
        r = c.post("/pose", params={"model": "hourglass-fp16"},
                   files={"image": ("p.jpg", image_bytes(), "image/jpeg")})
        assert r.status_code == 404 and "CUDAExecutionProvider" in r.json()["detail"]


@pytest.mark.parametrize("edit, reason", [
    (lambda m: m.update(onnx="/etc/passwd"), "onnx"),                 # a path outside the model dir
    (lambda m: m.update(onnx="../hourglass.onnx"), "onnx"),
    (lambda m: m["input"].update(size="big"), "input.size"),           # not a number
    (lambda m: m.update(output_kind="boxes"), "output_kind"),
    (lambda m: m.pop("keypoints"), "keypoints"),
    (lambda m: m.update(surprise=1), "surprise"),                      # a typo'd or unknown key
])
def test_a_malformed_manifest_costs_that_model_alone(model_dir, tmp_path, edit, reason):
    """Schema validation at load: the bad model is unavailable with a reason that names
    the field and no server path; the rest of the directory serves."""
    for name in ("hourglass", "cpm"):
        shutil.copy(model_dir / f"{name}.onnx", tmp_path)
        shutil.copy(model_dir / f"{name}.json", tmp_path)
    manifest = json.loads((tmp_path / "cpm.json").read_text())
    edit(manifest)
    (tmp_path / "cpm.json").write_text(json.dumps(manifest))
    with TestClient(create_app(Settings(model_dir=tmp_path, pool_size=1, intra_op_threads=1))) as c:
        listing = c.get("/models").json()
        assert [m["id"] for m in listing["models"]] == ["hourglass"]
        failed = listing["unavailable"]["cpm"]
        assert failed.startswith("invalid manifest") and reason in failed
        assert "/etc" not in failed and str(tmp_path) not in failed


def test_compare_defaults_to_the_full_precision_model_of_each_architecture():
    from types import SimpleNamespace

    from app.registry import Registry

    def model(variant):
        return SimpleNamespace(manifest=SimpleNamespace(variant=variant))

    reg = Registry(models={"cpm": model(None), "cpm-int8": model("int8"), "hourglass": model(None)})
    assert reg.compared(None) == [reg.models["cpm"], reg.models["hourglass"]]
    assert reg.compared("cpm-int8, cpm") == [reg.models["cpm-int8"], reg.models["cpm"]]
    with pytest.raises(KeyError):
        reg.compared("cpm,tompson")


@pytest.mark.parametrize("mode", ["shared", "per-session"])
def test_every_arena_mode_answers_as_per_run_allocation_does(model_dir, mode):
    """Where activations live changes memory and speed, never an answer: two models' sessions
    on the process-wide arena (registered once however many sessions use it) agree with
    sessions that allocate per run, batch after batch of different sizes."""
    import numpy as np

    from models.runtime import create_session

    rng = np.random.default_rng(0)
    for name in ("cpm", "hourglass"):
        plain = create_session(model_dir / f"{name}.onnx", 1, None, "off")
        pooled = [create_session(model_dir / f"{name}.onnx", 1, None, mode) for _ in range(2)]
        size = plain.get_inputs()[0].shape[2]
        for batch in (3, 1, 8):
            x = {plain.get_inputs()[0].name: rng.random((batch, 3, size, size), dtype=np.float32)}
            want = plain.run(None, x)
            for session in pooled:
                for got, ref in zip(session.run(None, x), want):
                    np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-5)


def test_the_arena_setting_takes_its_names_and_the_older_booleans():
    from pydantic import ValidationError

    assert Settings().cpu_arena == "shared"
    assert Settings(cpu_arena="false").cpu_arena == "off" and Settings(cpu_arena=True).cpu_arena == "per-session"
    with pytest.raises(ValidationError):
        Settings(cpu_arena="sometimes")
