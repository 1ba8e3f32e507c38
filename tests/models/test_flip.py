"""The test-time flip outside the graph (``models.flip``): the same answers as the flip
baked into a graph, and the numpy decoding the same as the graph's."""
from __future__ import annotations

import numpy as np
import pytest

from models.flip import merge_mirrored, unmirror, with_mirrors
from models.heatmap_codec import HEATMAP_SIGMA, REFINEMENTS, decode_heatmaps, render_gaussians
from models.keypoints import FLIP_PERMUTATION


def test_a_mirror_consistent_pair_merges_to_the_original():
    rng = np.random.default_rng(0)
    n, k = 3, len(FLIP_PERMUTATION)
    points = rng.random((n, k, 2), np.float32)
    original = {"keypoints": points, "stage_keypoints": rng.random((n, 2, k, 2), np.float32),
                "heatmaps": render_gaussians(points, 8, 8, HEATMAP_SIGMA)}  # a regressor's, rendered
    # what the graph would answer on the mirror images if it were exactly mirror-equivariant
    mirrored = {name: unmirror(name, v, FLIP_PERMUTATION) for name, v in original.items()}
    both = {name: np.concatenate([original[name], mirrored[name]]) for name in original}
    merged = merge_mirrored(both, FLIP_PERMUTATION, output_kind="coordinates")
    for name, v in original.items():
        np.testing.assert_allclose(merged[name], v, atol=1e-6)
    # and a pair that disagrees is averaged: a left wrist at x=0.2 on the crop, at 0.6 on the mirror's
    assert unmirror("keypoints", original["keypoints"], FLIP_PERMUTATION)[0, 0, 0] == pytest.approx(
        1 - original["keypoints"][0, FLIP_PERMUTATION[0], 0])


def test_mirrors_are_appended_left_to_right():
    x = np.arange(2 * 3 * 2 * 4, dtype=np.float32).reshape(2, 3, 2, 4)
    both = with_mirrors(x)
    assert both.shape == (4, 3, 2, 4)
    np.testing.assert_array_equal(both[:2], x)
    np.testing.assert_array_equal(both[2:, :, :, 0], x[..., 3])


def test_an_output_without_a_flip_rule_is_refused():
    with pytest.raises(ValueError, match="no flip rule"):
        unmirror("offsets", np.zeros((1, 19, 2)), FLIP_PERMUTATION)


def test_numpy_coding_equals_the_graphs():
    torch = pytest.importorskip("torch")
    from models.heatmaps import decode_heatmaps as graph_decode
    from models.heatmaps import render_gaussians as graph_render

    g = torch.Generator().manual_seed(0)
    points = torch.rand(4, 19, 2, generator=g)
    np.testing.assert_allclose(render_gaussians(points.numpy(), 24, 20, 1.5), graph_render(points, 24, 20, 1.5).numpy(),
                               atol=1e-6)
    peaks = graph_render(points, 24, 24, 1.5)
    for maps in (torch.rand(4, 19, 24, 24, generator=g), peaks + 0.01 * torch.rand(4, 19, 24, 24, generator=g),
                 -torch.rand(2, 19, 24, 24, generator=g)):
        for refine in REFINEMENTS:
            for sigma in (1.0, 2.0):
                np.testing.assert_allclose(decode_heatmaps(maps.numpy(), refine, sigma),
                                           graph_decode(maps, refine, sigma).numpy(), atol=1e-5, err_msg=refine)


def test_dark_blurs_the_peaks_neighbourhood_as_a_whole_map_blur_would():
    """The decoding blurs only the 3×3 cells it reads (a window between band matrices); those
    are the cells a blur of the whole map, zeros beyond its border, would give: at the
    centre, an edge and the corners."""
    from models.heatmap_codec import blur_band, blur_taps, peak_window

    maps = np.random.default_rng(0).random((2, 19, 20, 20), dtype=np.float32)
    taps = blur_taps(2.0)
    full = maps
    for axis in (-1, -2):  # "same": zeros beyond the border, the odd kernel centred
        full = np.apply_along_axis(lambda v: np.convolve(v, taps, mode="same"), axis, full)
    band = blur_band(2.0)
    for x0, y0 in [(9, 11), (0, 0), (19, 19), (1, 18), (0, 10)]:
        x, y = np.full((2, 19), x0), np.full((2, 19), y0)
        near = band @ peak_window(maps.reshape(2, 19, -1), x, y, 20, 20, band.shape[1] // 2) @ band.T
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                if 0 <= y0 + dy < 20 and 0 <= x0 + dx < 20:
                    np.testing.assert_allclose(near[..., 1 + dy, 1 + dx], full[..., y0 + dy, x0 + dx], atol=1e-6)


@pytest.mark.parametrize("name", ["hourglass", "deeppose"])
def test_flip_outside_the_graph_answers_what_the_flip_inside_does(tmp_path, name):
    pytest.importorskip("torch")
    from export.onnx_export import export_model
    from models.evaluate import onnx_runner
    from tests.helpers import TEST_INPUT, tiny_checkpoint

    export_model(tiny_checkpoint(name), tmp_path / "plain")
    export_model(tiny_checkpoint(name), tmp_path / "inside", flip_test=True)
    batch = np.random.default_rng(1).normal(size=(3, 3, TEST_INPUT, TEST_INPUT)).astype(np.float32)
    outside = onnx_runner(tmp_path / "plain" / f"{name}.onnx", flip_test=True).outputs(batch)
    inside = onnx_runner(tmp_path / "inside" / f"{name}.onnx").outputs(batch)
    plain = onnx_runner(tmp_path / "plain" / f"{name}.onnx").outputs(batch)
    assert set(outside) == set(inside)
    for key in inside:
        np.testing.assert_allclose(outside[key], inside[key], atol=2e-5, err_msg=key)
    assert np.abs(plain["keypoints"] - inside["keypoints"]).max() > 1e-3  # the flip changes the answer
