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
