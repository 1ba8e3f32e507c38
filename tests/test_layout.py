"""The one-way data flow, enforced: dataset → models/ → export/ → models/onnx/ → app/.

Every import statement in the packages is read (top-level and deferred alike), so a
shortcut "upwards" fails here instead of in a review.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# What the torch-free serving side may use from models/: geometry, the manifest, the
# session factory, the joint tables, the detector's decoding and the flip's numpy heatmap
# coding. Nothing that trains, evaluates or exports.
SERVING_SAFE = {"models", "models.transforms", "models.manifest", "models.runtime", "models.keypoints",
                "models.detection", "models.flip", "models.heatmap_codec"}


def imports(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(ROOT))] = names
    return found


def offenders(package: str, allowed) -> list[str]:
    return [f"{file}: {name}" for file, names in imports(package).items() for name in sorted(names)
            if name.split(".")[0] in ("app", "models", "export", "benchmarks") and not allowed(name)]


@pytest.mark.parametrize("package, allowed", [
    ("models", lambda n: n.startswith("models")),
    ("export", lambda n: n.startswith(("models", "export"))),
    ("app", lambda n: n.startswith("app") or n in SERVING_SAFE),
])
def test_imports_flow_one_way(package, allowed):
    assert offenders(package, allowed) == []


def test_serving_modules_of_models_are_torch_free():
    for module in SERVING_SAFE - {"models"}:
        names = imports("models")[module.replace(".", "/") + ".py"]
        assert not {n for n in names if n.split(".")[0] in ("torch", "onnx", "scipy")}, module
        assert {n for n in names if n.startswith("models")} <= SERVING_SAFE, module


def test_no_route_is_declared_inside_a_function():
    """Routes are module-level (``app.routers``), reachable without building an app."""
    for path in (ROOT / "app").rglob("*.py"):
        for fn in (n for n in ast.walk(ast.parse(path.read_text()))
                   if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))):
            inner = [d for n in ast.walk(fn) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)) and n is not fn
                     for d in n.decorator_list]
            assert not any("router" in ast.unparse(d) or "app." in ast.unparse(d) for d in inner), path
