"""``poseserve predict``: photos and folders offline, through the service's pipeline."""
from __future__ import annotations

import argparse
import json

import pytest
from PIL import Image

from app.predict import add_arguments, main
from tests.helpers import DATA, image_bytes


def run(argv: list[str]) -> None:
    p = argparse.ArgumentParser()
    add_arguments(p)
    main(p.parse_args(argv))


def test_a_folder_becomes_a_coco_results_file_and_renders(model_dir, tmp_path, capsys):
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    (photos / "000000000042.jpg").write_bytes(image_bytes(size=(120, 160)))
    (photos / "sub" / "b.png").write_bytes(image_bytes("PNG", size=(90, 90)))
    (photos / "sub" / "b.jpg").write_bytes(image_bytes(size=(70, 50)))  # the same stem: its own render
    (photos / "broken.jpg").write_bytes(b"not an image")
    (photos / "notes.txt").write_text("ignored")
    out, renders = tmp_path / "results.json", tmp_path / "renders"
    run([str(photos), "--model-dir", str(model_dir), "--model", "cpm", "--no-detect", "--out", str(out),
         "--render", str(renders)])
    results = json.loads(out.read_text())
    assert sorted(r["file_name"].rsplit("/", 1)[1] for r in results) == ["000000000042.jpg", "b.jpg", "b.png"]
    first = next(r for r in results if r["file_name"].endswith("042.jpg"))
    assert first["image_id"] == 42 and first["category_id"] == 1 and len(first["keypoints"]) == 51
    assert set(first["joints"]) >= {"nose", "right_ankle", "head_top"} and 0 < first["score"] <= 1
    assert sorted(p.name for p in renders.iterdir()) == ["000000000042.png", "b-2.png", "b.png"]
    assert Image.open(renders / "b.png").size == (70, 50) and Image.open(renders / "b-2.png").size == (90, 90)
    err = capsys.readouterr().err
    assert "skipped" in err and "broken.jpg" in err and "3 people in 3 images, 1 skipped" in err


@pytest.mark.skipif(not (DATA / "coco_dev").exists(), reason="../shared coco_dev not present")
def test_pycocotools_reads_the_results_against_coco_ground_truth(model_dir, tmp_path):
    """The file is a COCO results file: loadRes accepts it and COCOeval scores it."""
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt_path = DATA / "coco_dev" / "person_keypoints.json"
    photo = DATA / "coco_dev" / "images" / "000000005001.jpg"
    out = tmp_path / "r.json"
    run([str(photo), "--model-dir", str(model_dir), "--model", "hourglass", "--out", str(out)])
    results = json.loads(out.read_text())
    assert results and {r["image_id"] for r in results} == {5001}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(gt_path))
        ev = COCOeval(gt, gt.loadRes(str(out)), "keypoints")
        ev.params.imgIds = [5001]
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert 0 <= ev.stats[0] <= 1


def test_a_video_becomes_json_lines_and_a_rendered_mp4(model_dir, tmp_path, capsys):
    av = pytest.importorskip("av")
    from tests.helpers import clip_bytes

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "walk.mp4").write_bytes(clip_bytes(12, size=(96, 64), rate=10))
    (tmp_path / "in" / "broken.mp4").write_bytes(b"not a video")
    (tmp_path / "in" / "walk.webm").write_bytes(clip_bytes(4, size=(96, 64), rate=10))  # same stem: walk-2
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    main(parser.parse_args([str(tmp_path / "in"), "--model-dir", str(model_dir), "--no-detect", "--fps", "5",
                            "--smooth", "--out-dir", str(tmp_path / "out"), "--render", str(tmp_path / "renders")]))
    rows = [json.loads(line) for line in (tmp_path / "out" / "walk.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in rows[:-1]] == [0, 2, 4, 6, 8, 10]
    assert rows[-1]["summary"]["frames"] == 6 and rows[-1]["summary"]["smooth"] is True
    assert all(p["track_id"] == 1 for r in rows[:-1] for p in r["persons"])
    err = capsys.readouterr().err
    assert "broken.mp4" in err and "2 videos" in err
    assert len((tmp_path / "out" / "walk-2.jsonl").read_text().splitlines()) == 3  # 2 frames + summary
    with av.open(str(tmp_path / "renders" / "walk.mp4")) as rendered:
        assert sum(1 for _ in rendered.decode(video=0)) == 6
