"""The benchmark harness end to end on tiny models: every table filled from real measurements."""
from __future__ import annotations

import numpy as np
import pytest

import argparse
import re

from benchmarks.bench import add_arguments, main
from tests.helpers import ARCHITECTURES

pytestmark = pytest.mark.slow  # real servers / benchmarks / fuzzing: minutes, not seconds


def test_bench_writes_every_table_with_measured_ratios(model_dir, tmp_path):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    out = tmp_path / "bench.md"
    main(parser.parse_args(["--model-dir", str(model_dir), "--n", "3", "--seconds", "0.3",
                            "--out", str(out), "--data", str(tmp_path)]))  # no dataset: synthetic photo
    text = out.read_text()
    for heading in ("## Models", "## Service latency", "## Where one request's time goes",
                    "## The service's own `timing_ms`", "## Throughput", "## Micro-batching"):
        assert heading in text
    for name in ARCHITECTURES:
        assert f"| {name} | photo |" in text and f"| {name} | noise |" in text
    service = text.split("## Service latency")[1].split("## Where")[0]
    ratios = [float(v) for v in re.findall(r"\| (\d+\.\d+)×", service)]
    assert len(ratios) == 4 * 5 and all(r > 0.5 for r in ratios)  # a request can't beat bare inference by 2×
    throughput = text.split("## Throughput")[1].split("## Micro")[0]
    assert all(float(v) > 0 for v in re.findall(r"\| \d \| (\d+\.\d) \|", throughput))


def test_ab_serves_two_checkouts_side_by_side(model_dir, tmp_path):
    from benchmarks.ab import compare
    from benchmarks.bench import default_images
    from tests.helpers import ROOT as here

    result, peaks = compare(here, here, model_dir, "cpm", default_images(None, str(tmp_path)), n=4)
    assert set(result) == {"photo", "noise"}
    for baseline, candidate in result.values():
        assert 0 < baseline < 5 and 0 < candidate < 5  # seconds: real answers, no timeouts
    assert all(50 < mb < 4000 for mb in peaks)  # each server's own peak RSS


def test_ab_with_the_detector_sends_whole_photo_requests(model_dir, tmp_path):
    """--detector: both servers also load the person detector and detect; a response the
    servers could not give (here: no detector, 503) would stop the comparison."""
    from benchmarks.ab import compare
    from benchmarks.bench import default_images
    from tests.helpers import ROOT as here

    images = default_images(None, str(tmp_path))
    result, _ = compare(here, here, model_dir, "cpm", images, n=2, params="detect=true&stages=true",
                        heatmaps="array", detector=True)
    assert set(result) == {"photo", "noise"} and all(0 < t < 10 for pair in result.values() for t in pair)


def test_per_person_section_times_every_model_with_and_without_the_flip(model_dir, tmp_path):
    from benchmarks import per_person

    lines = per_person.section(model_dir, threads=1, n=10, data=str(tmp_path), plot_path=tmp_path / "acc.png")
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.split("|")[2:-1]]
            for line in lines if line.startswith("| ") and not line.startswith("| model")}
    assert set(ARCHITECTURES) <= set(rows)
    for name in ARCHITECTURES:
        assert all(float(v) > 0 for v in rows[name][2:6])  # every case timed (ms per person)
    # what each case runs: the flip doubles the rows, not the people answered
    x1 = np.zeros((1, 3, 4, 4), np.float32)
    shapes = {c: (len(x), people) for c, (x, people) in per_person.timing_cases(x1, 8).items()}
    assert shapes == {"batch 1": (1, 1), "batch 8": (8, 8), "batch 1 + flip": (2, 1), "batch 8 + flip": (16, 8)}
    inside = per_person.timing_cases(x1, 8, flip_inside=True)
    assert {c: len(x) for c, (x, _) in inside.items()} == {"batch 1 + flip": 1, "batch 8 + flip": 8}
    peers = [r for r in rows if "peer" in r]
    assert len(peers) == (1 if (per_person.PEERS_DIR / "movenet_lightning.onnx").exists() else 0)
    assert (tmp_path / "acc.png").exists() or not any(r[0] != "–" for r in rows.values())


def test_video_bench_measures_frames_per_second_memory_and_interference(model_dir, tmp_path):
    pytest.importorskip("av")
    from benchmarks.video import SINGLE, measure, report
    from tests.helpers import DATA

    if not (DATA / SINGLE).exists():
        pytest.skip("needs the LSP photo the clips are made of")
    result = measure(model_dir, str(DATA), seconds=1.0, long_seconds=2.0, n=3)
    assert set(result["fps"]) == {1, 4} and all(f["frames"] == 15 and f["fps"] > 0 for f in result["fps"].values())
    assert result["long"]["rss_max_mb"] >= result["long"]["rss_start_mb"] > 50
    assert result["long"]["pose_requests"] >= 1 and result["pose_alone_ms"] > 0
    text = report(result)
    assert "| 4 | 15 |" in text and "while the clip was analysed" in text


def test_the_arena_comparison_runs_every_mode_side_by_side(model_dir):
    """bench-arena on the test models: every mode answers the same photos, and the report
    carries a measured figure for each (mode, photo) and each memory column."""
    from PIL import Image

    from benchmarks.arena import MODES, latencies, markdown
    from benchmarks.people import group_photo

    single = Image.new("RGB", (60, 120), (90, 120, 150))
    photos = {1: group_photo(single, 1, (1, 1)), 3: group_photo(single, 3, (3, 1))}
    lat = latencies(model_dir, photos, blocks=1, per_block=2)
    assert set(lat["p50_ms"]) == {f"{m}/{k}" for m in MODES for k in photos} and min(lat["p50_ms"].values()) > 0
    assert set(lat["rss_after_mb"]) == set(MODES) and lat["requests_each"] == 2
    memory = {m: {"start_mb": 1, "peak_mb": 2, "after_last_mb": 2, "statuses": [200]} for m in MODES}
    text = markdown({"date": "d", "machine": "m", "rounds": 1, "latency": lat, "memory": memory}, "cmd")
    assert all(f"| `{m}` | {lat['p50_ms'][f'{m}/1']} | {lat['p50_ms'][f'{m}/3']} |" in text for m in MODES)


def test_the_people_section_times_the_detector_resized():
    pytest.importorskip("onnx")
    from benchmarks.people import resized_detectors
    from tests.helpers import image_bytes
    from app.settings import DEFAULT_MODEL_DIR

    smaller = resized_detectors(DEFAULT_MODEL_DIR / "person_detector.onnx", 1, image_bytes(size=(200, 120)), (320,))
    session, x = smaller[320]
    assert x.shape == (1, 3, 320, 320) and session.run(None, {"images": x})[0].shape == (1, 2100, 85)


def test_the_operator_profile_sums_kernel_time_by_type(model_dir):
    """profile-ops on a test model: convolutions are found, the per-type times add up to the
    report's total, per person at each batch."""
    from benchmarks.ops import markdown, op_times
    from tests.helpers import TEST_INPUT

    tables, nodes = {}, 0
    for batch in (1, 2):
        tables[batch], nodes = op_times(model_dir / "cpm.onnx", TEST_INPUT, batch, runs=2, warmup=1)
        assert tables[batch]["Conv"] > 0 and all(v >= 0 for v in tables[batch].values())
    assert nodes > 5
    text = markdown("cpm", TEST_INPUT, tables, nodes, runs=2)
    assert f"| **all kernels** | **{sum(tables[1].values()):.0f}** | 100% | **{sum(tables[2].values()) / 2:.0f}** |" in text
