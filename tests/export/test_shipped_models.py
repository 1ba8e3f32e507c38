"""The shipped, trained models: present, intact, served, and as accurate as their manifest says.

Needs the LSP dataset for the accuracy checks (``POSE_DATA_DIR`` or ../shared/datasets);
those tests are skipped where it is absent.
"""
from __future__ import annotations

from pathlib import Path


import pytest

from app.registry import load_registry
from app.settings import DEFAULT_MODEL_DIR, Settings
from models.manifest import PoseManifest, load_manifest
from tests.helpers import ARCHITECTURES, DATA

needs_data = pytest.mark.skipif(not (DATA / "lsp" / "joints.mat").exists(), reason="LSP dataset not present")
MEAN_POSE_PCK = 0.09  # PCK@0.2 of always answering the training set's mean pose (LSP test)


def manifest(model_id: str) -> PoseManifest:
    return load_manifest(DEFAULT_MODEL_DIR / f"{model_id}.json")


def test_all_five_trained_models_are_shipped_and_load():
    registry = load_registry(Settings(pool_size=1, intra_op_threads=1, device="cpu"))
    try:
        assert registry.failed == {}
        # fp16 variants are for the CUDA provider: skipped on CPU, not failed; shipped are
        # exactly those docs/fp16.md's policy said yes to (a variant failing parity is not)
        shipped_fp16 = {f.stem for f in DEFAULT_MODEL_DIR.glob("*-fp16.onnx")}
        decided = Path(__file__).parents[2] / "docs" / "fp16.md"
        said_yes = {f"{row.split('|')[1].strip()}-fp16" for row in decided.read_text().splitlines()
                    if row.startswith("| ") and row.rstrip().endswith("| yes |")}
        assert set(registry.skipped) == shipped_fp16 == said_yes
        assert shipped_fp16 <= {f"{m}-fp16" for m in ARCHITECTURES}
        # the five fp32 models, plus the int8 variants that passed docs/int8.md's policy
        assert {m for m in registry.models if not m.endswith("-int8")} == set(ARCHITECTURES)
        for variant in (m for m in registry.models if m.endswith("-int8")):
            decision = registry.models[variant].manifest.int8_decision
            assert decision["shipped"] and decision["pck_drop"] <= 0.02
            assert decision["p50_ms_int8"] < decision["p50_ms_fp32"]
    finally:
        registry.close()
    for model_id in ARCHITECTURES:
        m = manifest(model_id)
        # small enough to ship in the image and the repository; the regressors' fully connected
        # layer reads the flattened stride-32 map, so it grows with the input's area (DeepPose at
        # 192 px: 18.2 MiB); a duplicated or unfolded export would still overshoot
        assert (DEFAULT_MODEL_DIR / f"{model_id}.onnx").stat().st_size <= 20 * 2**20
        assert m.training["epochs"] >= 1, "shipped weights must be trained"
        assert m.accuracy["pck@0.2"] > MEAN_POSE_PCK
        if f"{model_id}-fp16" not in shipped_fp16:
            continue
        fp16 = manifest(f"{model_id}-fp16")
        assert fp16.base_model == model_id and fp16.flip_test == m.flip_test
        assert m.accuracy["pck@0.2"] - fp16.accuracy["pck@0.2"] <= 0.01


@pytest.mark.slow
@needs_data
def test_eval_reproduces_the_shipped_accuracy_exactly():
    pytest.importorskip("scipy")
    from models.evaluate import evaluate

    model_id = "hourglass"
    result = evaluate(model_id, data=str(DATA), onnx_path=DEFAULT_MODEL_DIR / f"{model_id}.onnx")
    recorded = manifest(model_id).accuracy
    # Same machine kind → identical; another CPU's kernels may flip a rare argmax tie.
    assert result["pck@0.2"] == pytest.approx(recorded["pck@0.2"], abs=0.002)
    assert result["per_stage_pck@0.2"] == pytest.approx(recorded["per_stage_pck@0.2"], abs=0.002)


def test_the_person_detector_ships_with_manifest_and_licence():
    from models.manifest import DetectorManifest, sha256_file

    m = load_manifest(DEFAULT_MODEL_DIR / "person_detector.json")
    assert isinstance(m, DetectorManifest) and m.classes == ["person"] and m.licence == "Apache-2.0"
    assert sha256_file(DEFAULT_MODEL_DIR / m.onnx) == m.sha256
    assert "Apache License" in (DEFAULT_MODEL_DIR / m.licence_file).read_text()
    assert "YOLOX" in m.origin and 0 < m.score_threshold < 1


@pytest.mark.parametrize("weights", sorted((DEFAULT_MODEL_DIR.parent / "weights").glob("*.pt")),
                         ids=lambda p: p.stem)
def test_released_weights_are_the_shipped_graph(weights):
    """The PyTorch weights a fine-tuning run starts from export to exactly the served ONNX
    (up to the stage the served graph ends at, where the release chose an early exit)."""
    pytest.importorskip("torch")
    from export.onnx_export import PARITY_TOLERANCE, check_parity
    from models.checkpoint import first_stages, load_checkpoint, stage_count, target_sigma

    full = load_checkpoint(weights)
    m = manifest(weights.stem)
    if m.early_exit is not None:
        assert stage_count(full) == m.early_exit.of and m.stages == m.early_exit.stage
    ckpt = first_stages(full, m.stages) if m.early_exit is not None else full
    assert ckpt.optimizer is None and ckpt.input_size == m.input.size
    assert tuple(ckpt.mean) == m.input.mean and m.training["epochs"] == ckpt.state["epoch"]
    decoding = m.heatmap_decoding
    if m.output_kind == "heatmaps":  # decoded with the width the weights were trained to
        assert m.decoding is not None and m.decoding.sigma == target_sigma(ckpt)
    assert check_parity(ckpt.model, DEFAULT_MODEL_DIR / m.onnx, m.input.size, batches=(2,), flip_test=m.flip_test,
                        refine=decoding.refine, sigma=decoding.sigma) <= PARITY_TOLERANCE


def test_models_from_a_pretrained_trunk_ship_its_licence_and_name_it():
    """Weights derived from Apache-2.0 trunks (ImageNet MobileNetV2, MoveNet's) carry the
    licence beside the ONNX file, and the manifest names the trunk and that file."""
    for path in DEFAULT_MODEL_DIR.glob("*.json"):
        m = load_manifest(path)
        if not isinstance(m, PoseManifest) or not m.pretrained:
            continue
        assert m.licence_file, f"{m.id}: pretrained from {m.pretrained!r} but no licence shipped"
        licence = DEFAULT_MODEL_DIR / m.licence_file
        assert licence.exists() and "Apache License" in licence.read_text()
        if m.licence_file.startswith("movenet"):
            assert "MoveNet" in m.pretrained and "Apache-2.0" in m.pretrained


def test_the_coco_array_of_an_lsp_only_model_leaves_the_face_empty():
    """A model without the face points answers COCO-17 with zeros there, and its body joints
    at the named keypoints' coordinates."""
    from types import SimpleNamespace

    from app.pipeline import coco_keypoints
    from app.schemas import Keypoint
    from models.keypoints import COCO_KEYPOINT_NAMES, LSP_KEYPOINT_NAMES

    from app.registry import LoadedModel

    model = LoadedModel("lsp-only", SimpleNamespace(keypoints=list(LSP_KEYPOINT_NAMES)), None, [])
    points = [Keypoint(id=i, name=n, x=10.0 + i, y=20.0 + i, in_image=True, score=0.5)
              for i, n in enumerate(LSP_KEYPOINT_NAMES)]
    coco = coco_keypoints(model, points)
    assert len(coco) == 51 and coco[:15] == [0.0] * 15  # nose, eyes, ears
    right_ankle = COCO_KEYPOINT_NAMES.index("right_ankle")
    assert coco[3 * right_ankle: 3 * right_ankle + 3] == [10.0, 20.0, 0.5]


@pytest.mark.skipif(not (DATA.parent / "pretrained" / "person_detector").exists(), reason="../shared/pretrained absent")
def test_the_shipped_detector_is_what_poseserve_detector_writes(tmp_path):
    """The graph in models/onnx is reproducible from ../shared/pretrained, at the size it documents."""
    pytest.importorskip("onnx")
    from export.detector import INPUT_SIZE, package

    written = package(DATA.parent / "pretrained", tmp_path)
    shipped = load_manifest(DEFAULT_MODEL_DIR / "person_detector.json")
    assert written.sha256 == shipped.sha256 and shipped.input["size"] == INPUT_SIZE
    anchors = sum((INPUT_SIZE // stride) ** 2 for stride in (8, 16, 32))  # one per cell of each grid
    assert written.output["shape"] == shipped.output["shape"] == [1, anchors, 85]


@pytest.mark.skipif(not (DATA.parent / "pretrained" / "person_detector").exists(), reason="../shared/pretrained absent")
def test_the_detector_packs_at_another_input_size_and_still_finds_the_person(tmp_path):
    """``poseserve detector --input-size 320``: a valid graph of 320² in, 2100 anchor points
    out, whose manifest decodes it, finding the athlete of an LSP photo where 416 does."""
    pytest.importorskip("onnx")
    from PIL import Image

    from export.detector import package
    from models.detection import letterbox, people
    from models.manifest import sha256_file
    from models.runtime import create_session

    photo = Image.open(DATA / "lsp" / "images" / "im1500.jpg").convert("RGB")
    boxes = {}
    for size in (416, 320):
        m = package(DATA.parent / "pretrained", tmp_path / str(size), size)
        path = tmp_path / str(size) / m.onnx
        assert sha256_file(path) == m.sha256 and m.input["size"] == size
        x, ratio = letterbox(photo, size)
        raw = create_session(path, 1).run(None, {"images": x})[0]
        assert raw.shape == tuple(m.output["shape"]) == (1, 3549 if size == 416 else 2100, 85)
        found = people(raw[0], size, ratio, photo.size, m.score_threshold, m.iou_threshold, 5)
        assert len(found) == 1, found
        boxes[size] = found[0]
    a, b = boxes[416], boxes[320]
    ix = max(0.0, min(a.x + a.w, b.x + b.w) - max(a.x, b.x))
    iy = max(0.0, min(a.y + a.h, b.y + b.h) - max(a.y, b.y))
    assert ix * iy / (a.area + b.area - ix * iy) > 0.8
