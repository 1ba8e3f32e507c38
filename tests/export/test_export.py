"""Export: ONNX validity, parity with PyTorch at batch 1 and > 1, and the manifest."""
from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")

from export.onnx_export import OPSET, PARITY_TOLERANCE, check_parity, export_model, main, refuse_shipped
from models.checkpoint import load_checkpoint, save_checkpoint, target_sigma
from models.keypoints import KEYPOINT_NAMES
from models.manifest import PoseManifest, load_manifest, sha256_file
from models.runtime import create_session
from models.transforms import IMAGENET_MEAN as MEAN
from tests.helpers import ARCHITECTURES, TEST_INPUT, tiny_checkpoint, tiny_model


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_exported_graph_is_valid_and_matches_pytorch(model_dir, name):
    path = model_dir / f"{name}.onnx"
    onnx.checker.check_model(str(path))
    graph = onnx.load(str(path))
    assert graph.opset_import[0].version >= 17
    assert graph.graph.input[0].type.tensor_type.shape.dim[0].dim_param == "batch"
    decoding = load_manifest(path.with_suffix(".json")).heatmap_decoding  # the graph decodes as its manifest says
    assert check_parity(tiny_model(name), path, TEST_INPUT, batches=(1, 5), seed=7,
                        refine=decoding.refine, sigma=decoding.sigma) <= PARITY_TOLERANCE


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_manifest_describes_the_graph(model_dir, name):
    manifest = load_manifest(model_dir / f"{name}.json")
    assert isinstance(manifest, PoseManifest) and manifest.kind == "pose"
    assert manifest.id == name and manifest.opset == OPSET
    assert manifest.sha256 == sha256_file(model_dir / f"{name}.onnx")
    assert manifest.keypoints == list(KEYPOINT_NAMES)
    assert manifest.input.size == TEST_INPUT and manifest.input.mean == MEAN
    assert manifest.params == sum(p.numel() for p in tiny_model(name).parameters())
    assert manifest.flops > 0
    # heatmap graphs name their decoding, with the width the checkpoint was trained to
    expected = ({"refine": "dark", "sigma": target_sigma(tiny_checkpoint(name))}
                if manifest.output_kind == "heatmaps" else None)
    assert (manifest.decoding and manifest.decoding.model_dump()) == expected
    assert manifest.heatmap_source == ("rendered" if name in ("deeppose", "ief") else "predicted")
    session = create_session(model_dir / f"{name}.onnx")
    assert [o.name for o in session.get_outputs()] == list(manifest.outputs)
    outs = session.run(None, {"image": np.zeros((3, 3, TEST_INPUT, TEST_INPUT), np.float32)})
    for out, spec in zip(outs, manifest.outputs.values()):
        assert list(out.shape) == [3, *spec.shape[1:]]
    assert manifest.stages == outs[1].shape[1]


def test_parity_check_catches_a_different_model(model_dir):
    other = tiny_model("hourglass")
    with torch.no_grad():
        other.heads[-1].bias.add_(0.5)
    with pytest.raises(AssertionError):
        decoding = load_manifest(model_dir / "hourglass.json").heatmap_decoding
        assert check_parity(other, model_dir / "hourglass.onnx", TEST_INPUT, refine=decoding.refine,
                            sigma=decoding.sigma) <= PARITY_TOLERANCE


def test_checkpoint_round_trip(tmp_path):
    saved = tiny_checkpoint("cpm")
    saved.state = {"epoch": 3, "elapsed": 120.0}
    save_checkpoint(tmp_path / "c.pt", saved, with_optimizer=False)
    ckpt = load_checkpoint(tmp_path / "c.pt")
    assert ckpt.state["epoch"] == 3 and ckpt.optimizer is None and ckpt.arch_id == "cpm"
    for a, b in zip(saved.model.state_dict().values(), ckpt.model.state_dict().values()):
        assert torch.equal(a, b)
    manifest = export_model(ckpt, tmp_path / "out")
    assert manifest.training["epochs"] == 3 and manifest.training["train_minutes"] == 2.0
    assert (tmp_path / "out" / "cpm.onnx").exists()


def test_older_checkpoints_without_builder_options_still_load(tmp_path):
    from models.architectures import build_model

    model = build_model("cpm", input_size=TEST_INPUT, width=4, num_keypoints=14)  # before the face points
    torch.save({"model": model.state_dict(), "optimizer": {}, "mean": MEAN, "std": MEAN,
                "state": {"epoch": 1, "elapsed": 1.0},
                "config": {"model": "cpm", "input_size": TEST_INPUT, "width": 4}}, tmp_path / "old.pt")
    old = load_checkpoint(tmp_path / "old.pt")
    assert old.arch_id == "cpm" and old.model.num_keypoints == 14


def test_export_refuses_to_overwrite_the_shipped_models_without_force(tmp_path):
    from export.onnx_export import SHIPPED_DIR

    with pytest.raises(SystemExit, match="--force"):
        refuse_shipped(SHIPPED_DIR, force=False)
    refuse_shipped(SHIPPED_DIR, force=True)
    refuse_shipped(tmp_path, force=False)
    import argparse

    with pytest.raises(SystemExit, match="shipped"):  # the command itself, before any work
        main(argparse.Namespace(out=SHIPPED_DIR, force=False, model="cpm", checkpoint=None, flip_test=False))


def test_export_refuses_a_graph_that_breaks_parity(tmp_path, monkeypatch):
    import export.onnx_export as ex

    (tmp_path / "tompson.onnx").write_bytes(b"the graph released before")
    monkeypatch.setattr(ex, "check_parity", lambda *a, **k: 1.0)
    with pytest.raises(AssertionError, match="differs"):
        export_model(tiny_checkpoint("tompson"), tmp_path)
    assert not (tmp_path / "tompson.json").exists()
    # the graph already there is left as it was, and no staged file stays behind
    assert (tmp_path / "tompson.onnx").read_bytes() == b"the graph released before"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tompson.onnx"]


def test_a_regressors_rendered_maps_are_held_to_the_points_tolerance(tmp_path, monkeypatch):
    """DeepPose's heatmaps are Gaussians drawn at its points: a point moved by d moves a
    value by up to d · side / sigma · e^-1/2, so parity reads them in the points' units.
    Every point moved by 5e-5 crop units (within the 1e-4 tolerance; the maps' values then
    move by about 5e-4) passes; the maps alone drawn 5e-4 away fails."""
    import export.onnx_export as ex
    from models.heatmaps import HEATMAP_SIGMA, render_gaussians
    from models.inference import InferenceGraph

    ckpt = tiny_checkpoint("deeppose")
    path = tmp_path / "deeppose.onnx"
    ex.export_onnx(ckpt.model, path, TEST_INPUT)
    forward = InferenceGraph.forward
    side = TEST_INPUT // 4
    for points_by, maps_by, ok in ((5e-5, 5e-5, True), (0.0, 5e-4, False)):
        def moved(self, image, points_by=points_by, maps_by=maps_by):
            points, stages, _ = forward(self, image)
            return points + points_by, stages + points_by, render_gaussians(points + maps_by, side, side, HEATMAP_SIGMA)

        monkeypatch.setattr(InferenceGraph, "forward", moved)
        assert (ex.check_parity(ckpt.model, path, TEST_INPUT) <= ex.PARITY_TOLERANCE) is ok


def test_int8_variant_is_valid_and_served_under_its_own_id(model_dir, tmp_path):
    import shutil

    from app.registry import load_registry
    from app.settings import Settings
    from export.quantize import CALIBRATIONS, CropReader, disagreement, keypoints, quantize_int8, quantize_network
    from models.transforms import normalise

    shutil.copy(model_dir / "cpm.onnx", tmp_path)
    shutil.copy(model_dir / "cpm.json", tmp_path)
    crops = np.random.default_rng(0).integers(0, 255, (24, TEST_INPUT, TEST_INPUT, 3), dtype=np.uint8)
    out = quantize_int8(tmp_path / "cpm.onnx", crops[:16], holdout=crops[16:])
    onnx.checker.check_model(str(out))
    graph = onnx.load(str(out))
    assert any(n.op_type == "QuantizeLinear" for n in graph.graph.node)
    # only the network is quantized: the decoding's own arithmetic, the image-reading layer and
    # the final outputs stay float (the decoding may read an earlier stage's heatmaps in their
    # quantized form, where the next stage reads them quantized too)
    produced_by = {o: n for n in graph.graph.node for o in n.output}

    def source(dq: onnx.NodeProto) -> str:  # the float tensor behind a DequantizeLinear
        q = produced_by.get(dq.input[0])
        return q.input[0] if q is not None and q.op_type == "QuantizeLinear" else dq.input[0]

    decoding_reads = [source(produced_by[i]) for n in graph.graph.node if not n.name.startswith("/model/")
                      for i in n.input if i in produced_by and produced_by[i].op_type == "DequantizeLinear"]
    assert all(t in produced_by and produced_by[t].name.startswith("/model/") for t in decoding_reads)
    first_conv = next(n for n in graph.graph.node if "image" in n.input and n.op_type == "Conv")
    assert first_conv.input[1] not in produced_by  # its weights: the float initializer
    assert all(produced_by[o.name].op_type != "DequantizeLinear" for o in graph.graph.output)
    manifest = load_manifest(out.with_suffix(".json"))
    assert manifest.id == "cpm-int8" and manifest.variant == "int8" and manifest.accuracy is None
    assert manifest.sha256 == sha256_file(out) and manifest.base_model == "cpm"
    # of the calibrations tried, the one kept answers closest to float32 on the held-out crops
    fp32_manifest = load_manifest(tmp_path / "cpm.json")
    x = normalise(crops[16:], fp32_manifest.input.mean, fp32_manifest.input.std)
    reference = keypoints(tmp_path / "cpm.onnx", x)
    assert reference.shape[0] == len(x) and disagreement(reference, tmp_path / "cpm.onnx", x) == 0
    distance, tried = {}, tmp_path / "tried"
    tried.mkdir()
    for name in CALIBRATIONS:
        quantize_network(tmp_path / "cpm.onnx", tried / f"{name}.onnx", CropReader(crops[:16], fp32_manifest), name)
        distance[name] = disagreement(reference, tried / f"{name}.onnx", x)
    chosen = min(distance, key=distance.get)
    assert f"{chosen} calibration" in manifest.quantization
    assert disagreement(reference, out, x) == pytest.approx(distance[chosen])
    registry = load_registry(Settings(model_dir=tmp_path, pool_size=1, intra_op_threads=1))
    try:
        assert sorted(registry.models) == ["cpm", "cpm-int8"] and not registry.failed
        x = {"image": np.random.default_rng(1).normal(size=(2, 3, TEST_INPUT, TEST_INPUT)).astype(np.float32)}
        fp32 = registry.models["cpm"].pool.sessions[0].run(None, x)
        int8 = registry.models["cpm-int8"].pool.sessions[0].run(None, x)
        assert [a.shape for a in fp32] == [b.shape for b in int8]
        # a request naming no model: the int8 variant on CPU when it costs <= half a point and is faster
        base = registry.default_for("auto")
        assert base == "cpm"  # no hourglass here: the first model; its int8 has no measured decision yet
        int8_manifest = registry.models["cpm-int8"].manifest
        for drop, faster, expected in ((0.004, True, "cpm-int8"), (0.006, True, "cpm"), (0.001, False, "cpm")):
            int8_manifest.int8_decision = {"pck_drop": drop, "p50_ms_fp32": 10.0,
                                           "p50_ms_int8": 5.0 if faster else 12.0, "shipped": True}
            assert registry.default_for("auto") == expected
        assert registry.default_for("cpm") == "cpm"  # a named default is taken as it is
    finally:
        registry.close()


@pytest.mark.parametrize("name", ["hourglass", "ief"])  # a heatmap model, and IEF's feedback loop
def test_fp16_variant_runs_the_network_in_half_and_keeps_float32_io(tmp_path, name):
    from export.onnx_export import FP16_PARITY_TOLERANCE

    ckpt = tiny_checkpoint(name)
    manifest = export_model(ckpt, tmp_path, flip_test=True, fp16=True)
    path = tmp_path / f"{name}-fp16.onnx"
    assert manifest.id == f"{name}-fp16" and manifest.base_model == name
    assert manifest.requires_provider == "CUDAExecutionProvider" and manifest.flip_test
    assert manifest.sha256 == sha256_file(path)
    graph = onnx.load(str(path)).graph
    float16 = onnx.TensorProto.FLOAT16
    weights = [t for t in graph.initializer if len(t.dims) == 4]  # conv kernels
    assert weights and all(t.data_type == float16 for t in weights)
    assert all(v.type.tensor_type.elem_type == onnx.TensorProto.FLOAT for v in [*graph.input, *graph.output])
    assert check_parity(ckpt.model, path, TEST_INPUT, flip_test=True, min_agreement=0.9,
                        sigma=target_sigma(ckpt)) <= FP16_PARITY_TOLERANCE
    # the source model is untouched: still float32, still matches the float32 export
    assert next(ckpt.model.parameters()).dtype == torch.float32


def test_a_partial_release_keeps_the_other_models_decisions(tmp_path):
    from export.release import kept_rows

    doc = tmp_path / "int8.md"
    doc.write_text("# int8\n\n| model | a |\n|---|---|\n| cpm | 1 |\n| hourglass | 2 |\n| ief | 3 |\n")
    assert kept_rows(doc, ["hourglass"]) == ["| cpm | 1 |", "| ief | 3 |"]
    assert kept_rows(tmp_path / "missing.md", ["cpm"]) == []


def test_fp16_release_exports_from_the_run_it_releases(tmp_path, monkeypatch):
    """``release --onnx-dir elsewhere --runs DIR`` must build the fp16 variant from the run's
    checkpoint, like the fp32 graph — not from released weights that may not exist yet."""
    from export import release

    ckpt = tiny_checkpoint("cpm")
    save_checkpoint(tmp_path / "runs" / "cpm" / "checkpoint.pt", ckpt)
    onnx_dir = tmp_path / "onnx"
    export_model(ckpt, onnx_dir, flip_test=True)
    monkeypatch.setattr(release, "RELEASED_WEIGHTS", tmp_path / "no-weights-here")
    measured = release.VariantMeasurement({}, 0.5, 0.5, 1.0, 1.0)
    monkeypatch.setattr(release, "measure_variant", lambda *a: measured)
    monkeypatch.setattr(release.report, "record_accuracy", lambda *a: None)
    rows = release.release_fp16(onnx_dir, None, tmp_path, ["cpm"], tmp_path / "runs")
    assert rows[-1].startswith("| cpm |") and rows[-1].endswith("| yes |")
    fp16 = onnx_dir / "cpm-fp16.onnx"
    assert check_parity(ckpt.model, fp16, TEST_INPUT, flip_test=True, min_agreement=0.9, sigma=target_sigma(ckpt)) < 0.05


def test_an_fp16_variant_failing_parity_is_not_shipped_and_the_release_goes_on(tmp_path, monkeypatch):
    from export import release
    from export.onnx_export import ParityError

    ckpt = tiny_checkpoint("cpm")
    save_checkpoint(tmp_path / "runs" / "cpm" / "checkpoint.pt", ckpt)
    onnx_dir = tmp_path / "onnx"
    export_model(ckpt, onnx_dir, flip_test=True)

    def failing_export(ckpt, out_dir, flip_test=False, fp16=False):
        (out_dir / "cpm-fp16.onnx").write_bytes(b"half-written")
        raise ParityError("cpm-fp16: ONNX differs from PyTorch float32 by 5.21e-02")

    monkeypatch.setattr(release, "export_model", failing_export)
    rows = release.release_fp16(onnx_dir, None, tmp_path, ["cpm"], tmp_path / "runs")
    assert rows[-1].startswith("| cpm |") and "no: cpm-fp16: ONNX differs" in rows[-1]
    assert not (onnx_dir / "cpm-fp16.onnx").exists() and (onnx_dir / "cpm.onnx").exists()


@pytest.mark.parametrize("groups", [1, 8])
def test_same_padding_exports_as_one_convolution_with_asymmetric_pads(tmp_path, groups):
    """The MoveNet trunk's SAME-padded stride-2 convolutions reach ONNX as one Conv node with
    pads [0, 0, 1, 1] (no Pad node for onnxruntime to copy through), computing what the
    eager module computes, at batch 1 and 3, depthwise or not."""
    import io

    from models.backbone import SameConv2d

    conv = torch.nn.Sequential(SameConv2d(8, 16 if groups == 1 else 8, 3, 2, 0, groups=groups, bias=False),
                               torch.nn.ReLU6()).eval()
    buf = io.BytesIO()
    torch.onnx.export(conv, torch.zeros(1, 8, 24, 24), buf, input_names=["x"], dynamic_axes={"x": {0: "b"}},
                      opset_version=OPSET, dynamo=False)
    graph = onnx.load_from_string(buf.getvalue())
    assert [n.op_type for n in graph.graph.node if n.op_type in ("Pad", "Conv")] == ["Conv"]
    pads = next(a.ints for n in graph.graph.node if n.op_type == "Conv" for a in n.attribute if a.name == "pads")
    assert list(pads) == [0, 0, 1, 1]
    path = tmp_path / "same.onnx"
    path.write_bytes(buf.getvalue())
    session = create_session(path, 1)
    for batch in (1, 3):
        x = torch.randn(batch, 8, 24, 24)
        with torch.no_grad():
            want = conv(x).numpy()
        np.testing.assert_allclose(session.run(None, {"x": x.numpy()})[0], want, atol=1e-5)


def test_one_unusual_calibration_crop_does_not_set_an_activation_range(tmp_path):
    """Activation ranges follow the typical crop: with plain MinMax one crop whose
    activations are 100× the others' would make every int8 step 100× coarser."""
    from onnx import TensorProto, helper, numpy_helper

    from export.quantize import quantize_network

    rng = np.random.default_rng(0)

    def conv(name: str, x: str, y: str) -> onnx.NodeProto:
        weights.append(numpy_helper.from_array(rng.normal(size=(4, 4, 1, 1)).astype(np.float32), f"{name}.w"))
        return helper.make_node("Conv", [x, f"{name}.w"], [y], name=f"/model/{name}")

    weights: list = []
    nodes = [conv("first", "image", "a"), helper.make_node("Relu", ["a"], ["b"], name="/model/relu"),
             conv("middle", "b", "c"), helper.make_node("Relu", ["c"], ["d"], name="/model/relu2"),
             conv("last", "d", "out")]
    spec = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4, 8, 8]) for n in ("image", "out")]
    model = helper.make_model(helper.make_graph(nodes, "tiny", spec[:1], spec[1:], weights),
                              opset_imports=[helper.make_opsetid("", 17)])
    src, out = tmp_path / "tiny.onnx", tmp_path / "tiny-int8.onnx"
    onnx.save(model, str(src))
    crops = [rng.uniform(0, 1, (1, 4, 8, 8)).astype(np.float32) for _ in range(64)]
    crops[32] = crops[32] * 100  # the unusual one, mid-way (the first sets the starting range)

    class Reader:
        def __init__(self) -> None:
            self.batches = iter(crops)

        def get_next(self) -> dict | None:
            batch = next(self.batches, None)
            return None if batch is None else {"image": batch}

    quantize_network(src, out, Reader(), "moving-average")
    first = numpy_helper.to_array(weights[0])[:, :, 0, 0]
    typical = max(float(np.maximum(np.einsum("oi,nihw->nohw", first, c), 0).max()) for c in crops[:32])
    graph = onnx.load(str(out)).graph
    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    quantizers = {n.input[0]: n for n in graph.node if n.op_type == "QuantizeLinear"}
    scale = float(values[quantizers["b"].input[1]])  # the quantized activation read by the middle conv
    assert scale * 255 < 5 * typical  # plain MinMax: ≥ 100 × typical


def test_export_with_stages_writes_the_early_exit_graph(tmp_path):
    """``poseserve export --stages 1``: a graph and manifest of the first stack only, whose
    answer is the full network's first stage."""
    import argparse

    ckpt = tiny_checkpoint("hourglass")
    save_checkpoint(tmp_path / "ckpt.pt", ckpt)
    main(argparse.Namespace(model="hourglass", checkpoint=tmp_path / "ckpt.pt", out=tmp_path / "out",
                            flip_test=False, force=False, stages=1))
    m = load_manifest(tmp_path / "out" / "hourglass.json")
    assert m.stages == 1 and m.outputs["stage_heatmaps"].shape[1] == 1
    x = np.random.default_rng(0).normal(size=(1, 3, TEST_INPUT, TEST_INPUT)).astype(np.float32)
    got = create_session(tmp_path / "out" / "hourglass.onnx").run(["heatmaps"], {"image": x})[0]
    with torch.no_grad():
        first = ckpt.model(torch.from_numpy(x))[0].numpy()
    assert np.abs(got - first).max() < 1e-4


def test_the_earliest_stage_within_the_margin_on_every_set_is_where_a_release_exits():
    from export.release import exit_stage

    assert exit_stage([[0.881, 0.882], [0.739, 0.739]], 0.005) == 1
    assert exit_stage([[0.881, 0.882], [0.700, 0.739]], 0.005) == 2  # coco_dev says no
    assert exit_stage([[0.826, 0.859, 0.860]], 0.005) == 2
    assert exit_stage([[0.5, 0.6, 0.7]], 0.005) == 3
    assert exit_stage([[0.90, 0.80]], 0.005) == 1  # an earlier stage that is better


@pytest.mark.parametrize("faster", [True, False])
def test_a_release_serves_the_early_exit_only_when_it_is_faster(tmp_path, monkeypatch, faster):
    """The release ends a staged model's graph at the earliest stage within half a point of
    the last (here stage 1 of 2) when the shorter graph times faster; either way the
    decision, with the per-stage numbers, goes into the manifest and docs/early_exit.md,
    and the variants are built from the graph that is served."""
    import argparse

    from export import release

    ckpt = tiny_checkpoint("hourglass")
    save_checkpoint(tmp_path / "runs" / "hourglass" / "checkpoint.pt", ckpt)
    onnx_dir, docs = tmp_path / "onnx", tmp_path / "docs"
    docs.mkdir()
    manifest = export_model(ckpt, onnx_dir)
    manifest.accuracy = {"pck@0.2": 0.5, "per_stage_pck@0.2": [0.498, 0.5],
                         "coco_dev": {"pck@0.2": 0.4, "per_stage_pck@0.2": [0.4, 0.4]}}
    manifest.save(onnx_dir / "hourglass.json")
    monkeypatch.setattr(release, "interleaved_p50", lambda a, b, size: (0.010, 0.007 if faster else 0.011))
    measured = []
    monkeypatch.setattr(release.report, "main", lambda a: measured.append(a.models))
    args = argparse.Namespace(onnx_dir=onnx_dir, runs=tmp_path / "runs", docs=docs, data=None, limit=0)
    rows = release.release_early_exit(args, ["hourglass", "tompson"])
    served = load_manifest(onnx_dir / "hourglass.json")
    assert served.early_exit.of == 2 and served.early_exit.lsp_per_stage == [0.498, 0.5]
    assert served.early_exit.p50_ms_exit == (7.0 if faster else 11.0)
    assert served.stages == served.early_exit.stage == (1 if faster else 2)
    assert measured == ([["hourglass"]] if faster else [])
    assert rows[-1].startswith("| hourglass | 2 | 0.498 → 0.500 | 0.400 → 0.400 | " + ("1 of 2" if faster else "2 of 2"))
    assert "tompson" not in "\n".join(rows)  # no stages to cut
    assert (docs / "early_exit.md").read_text().endswith(rows[-1] + "\n")
    variant_source = release.served_checkpoint("hourglass", tmp_path / "runs", onnx_dir)
    x = torch.randn(1, 3, TEST_INPUT, TEST_INPUT)
    with torch.no_grad():
        assert len(variant_source.model(x)) == served.stages
