"""README says what the server does: its example answer and its configuration table are
checked against the real thing."""
from __future__ import annotations

import json
import re

import pytest

from tests.helpers import DATA, ROOT, SHIPPED

README = (ROOT / "README.md").read_text()


def readme_example() -> tuple[str, dict]:
    """The README's curl query string and the JSON answer shown under it ("..." elided)."""
    query = re.search(r"curl -s -F image=@im1001\.jpg '[^?]*\?([^']*)'", README).group(1)
    block = README.split("An answer of the server to that photo", 1)[1].split("```json", 1)[1].split("```", 1)[0]
    return query, json.loads(block.replace(", ...]", "]"))


def same_shape(example, real, where: str = "") -> None:
    """Every key the README shows exists in the real answer with a value of the same kind."""
    if isinstance(example, dict):
        assert isinstance(real, dict), where
        assert set(example) == set(real), f"{where}: README {sorted(example)} != server {sorted(real)}"
        for k in example:
            same_shape(example[k], real[k], f"{where}.{k}")
    elif isinstance(example, list):
        assert isinstance(real, list) and (not example or real), where
        for e, r in zip(example, real):
            same_shape(e, r, f"{where}[]")
    elif example is None:
        assert real is None, f"{where}: README shows null, server sent {real!r}"
    else:
        assert isinstance(real, (int, float)) if isinstance(example, (int, float)) else type(real) is type(example), where


def close(a: list[float], b: list[float], tol: float) -> bool:
    return all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


@pytest.mark.skipif(not (DATA / "lsp" / "images" / "im1001.jpg").exists(), reason="needs ../shared datasets")
def test_the_readme_example_is_what_the_shipped_server_answers():
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    query, example = readme_example()
    photo = (DATA / "lsp" / "images" / "im1001.jpg").read_bytes()
    with TestClient(create_app(Settings(model_dir=SHIPPED, pool_size=1, intra_op_threads=1))) as c:
        r = c.post(f"/pose?{query}", files={"image": ("im1001.jpg", photo, "image/jpeg")})
    assert r.status_code == 200
    real = r.json()
    same_shape(example, real)
    assert (real["model"], real["image"]) == (example["model"], example["image"])
    assert len(real["persons"]) == len(example["persons"])
    for shown, got in zip(example["persons"], real["persons"]):
        assert close(shown["bbox"], got["bbox"], 0.5) and abs(shown["score"] - got["score"]) < 0.01
        assert close(shown["crop"], got["crop"], 0.5)
        k_shown, k_got = shown["keypoints"][0], got["keypoints"][0]
        assert k_shown["name"] == k_got["name"]
        assert close([k_shown["x"], k_shown["y"]], [k_got["x"], k_got["y"]], 0.5), (k_shown, k_got)
        assert abs(k_shown["score"] - k_got["score"]) < 0.01


def test_every_setting_is_in_the_readme_configuration_table():
    from app.settings import Settings

    table = README.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    documented = set(re.findall(r"^\| `(POSE_[A-Z0-9_]+)` \|", table, re.M))
    expected = {f"POSE_{name.upper()}" for name in Settings.model_fields}
    assert expected - documented == set(), "settings missing from README's table"
    assert documented - expected == set(), "README documents settings that do not exist"


def manifest(model_id: str) -> dict:
    return json.loads((SHIPPED / f"{model_id}.json").read_text())


def test_the_readme_accuracy_table_is_what_the_shipped_manifests_measured():
    """Every row of the README's accuracy table (LSP PCK@0.2 and @0.1, coco_dev, each with and
    without the flip, per stage, params) and the CPU default's sentence carry the numbers
    ``poseserve release`` recorded in the shipped manifests, to the digits shown."""
    rows = re.findall(r"^\| (\w+)(?: \(default\))? \| \d+ px \|(.*)$", README, re.M)
    assert {r[0] for r in rows} == {"hourglass", "cpm", "tompson", "ief", "deeppose"}
    for model_id, rest in rows:
        cells = [c.strip().strip("*") for c in rest.split("|")]
        lsp, lsp_flip, stages, lsp01, coco, coco_flip, params = cells[3:10]
        acc = manifest(model_id)["accuracy"]
        assert (float(lsp), float(lsp_flip), float(lsp01)) == (
            round(acc["pck@0.2"], 3), round(acc["flip_test"]["pck@0.2"], 3), round(acc["pck@0.1"], 3)), model_id
        assert (float(coco), float(coco_flip)) == (
            round(acc["coco_dev"]["pck@0.2"], 3), round(acc["flip_test"]["coco_dev_pck@0.2"], 3)), model_id
        cut = manifest(model_id)["early_exit"]
        if cut and cut["stage"] < cut["of"]:  # the full network's stages, and where the served graph ends
            stages, served = stages.split(" (serves ")
            assert int(served.rstrip(")")) == cut["stage"] and len(acc["per_stage_pck@0.2"]) == cut["stage"], model_id
            assert round(acc["pck@0.2"], 3) == round(cut["lsp_per_stage"][cut["stage"] - 1], 3), model_id
            per_stage = cut["lsp_per_stage"]
        else:
            per_stage = acc["per_stage_pck@0.2"]
        assert [float(s) for s in stages.split("→")] == [round(s, 3) for s in per_stage], model_id
        assert float(params.removesuffix(" M")) == round(manifest(model_id)["params"] / 1e6, 2), model_id
    int8 = manifest("hourglass-int8")
    said = re.search(r"gets `hourglass-int8`: LSP (\S+), coco_dev (\S+), (\S+) points under the\s+"
                     r"float32 graph at (\S+)× its latency", README)
    decision = int8["int8_decision"]
    assert said and [float(x) for x in said.groups()] == [
        round(int8["accuracy"]["pck@0.2"], 3), round(int8["accuracy"]["coco_dev"]["pck@0.2"], 3),
        round(decision["pck_drop"] * 100, 1), round(decision["p50_ms_int8"] / decision["p50_ms_fp32"], 2)]
