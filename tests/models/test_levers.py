"""``poseserve lever``: the two arms differ in the lever alone, and the report keeps every lever."""
from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("torch")

from models.levers import LEVERS, finished, parse_train_args, section, train_argv, write_section  # noqa: E402


@pytest.mark.parametrize("name, lever_dests", [("trunk", {"backbone"}), ("input-size", {"input_size"}),
                                               ("partial-bodies", {"half_body", "occlusion"}),
                                               ("finetune-size", {"input_size"}),
                                               ("distill", {"teacher"}), ("coco-share", {"coco_share"}),
                                               ("aspect", {"aspect"}), ("width", {"width"})])
def test_the_arms_differ_in_the_lever_only(name, lever_dests, tmp_path):
    lever = LEVERS[name]
    a, b = (vars(parse_train_args(train_argv("hourglass", Path("c.npz"), tmp_path, 15, 2, arm)))
            for arm in lever.arms)
    changed = {k for k in a if a[k] != b[k]}
    assert changed == lever_dests
    assert a["minutes"] == b["minutes"] == 15 and a["restart"] and a["seed"] == b["seed"]


@pytest.mark.parametrize("name", ["partial-bodies", "finetune-size", "distill", "coco-share", "aspect", "width"])
def test_a_fine_tuning_lever_starts_both_arms_from_the_models_release(name, tmp_path):
    for arm in LEVERS[name].arms:
        args = parse_train_args(train_argv("cpm", Path("c.npz"), tmp_path, 15, 2, arm))
        assert args.init == Path("models/weights/cpm.pt") and args.lr == 5e-4 and args.backbone is None


def test_a_fine_tune_keeps_the_releases_input_size_unless_the_arm_sets_one(tmp_path):
    usual, _ = LEVERS["partial-bodies"].arms
    assert parse_train_args(train_argv("cpm", Path("c.npz"), tmp_path, 15, 2, usual)).input_size is None
    _, finer = LEVERS["finetune-size"].arms
    assert parse_train_args(train_argv("cpm", Path("c.npz"), tmp_path, 15, 2, finer)).input_size == 256


def result(lsp: float, coco: float, steps: int = 100) -> dict:
    return {"command": "poseserve train …", "epochs": 2, "steps": steps, "images_seen": 3200,
            "train_minutes": 15.0, "lsp_pck@0.2": lsp, "coco_dev_pck@0.2": coco,
            "coco_dev_by_split": {"val2017": coco - 0.01}, "coco_dev_squashed_pck@0.2": coco - 0.1}


def test_each_lever_has_its_own_section_and_a_rerun_replaces_it(tmp_path):
    doc = tmp_path / "levers.md"
    trunk = section("trunk", LEVERS["trunk"], "hourglass", 15, [result(0.60, 0.50), result(0.74, 0.62)])
    assert "**+14.0** points on LSP, **+12.0** on coco_dev" in trunk and "| 0.740 | 0.620 | 0.610 | 0.520 |" in trunk
    write_section(doc, "trunk", trunk)
    write_section(doc, "input-size", section("input-size", LEVERS["input-size"], "hourglass", 15,
                                             [result(0.70, 0.60), result(0.72, 0.59)]))
    rerun = section("trunk", LEVERS["trunk"], "hourglass", 15, [result(0.61, 0.50), result(0.70, 0.60)])
    write_section(doc, "trunk", rerun)
    text = doc.read_text()
    assert text.startswith("# Training levers") and text.count("## trunk") == 1
    assert "**+9.0** points on LSP" in text and "**+14.0**" not in text
    assert "**-1.0** on coco_dev" in text  # the other lever's section is kept
    assert "--minutes 15`" in text and "Not a fair pair" not in text


def test_an_arm_that_got_less_than_half_the_others_steps_is_flagged():
    fair = section("aspect", LEVERS["aspect"], "hourglass", 40, [result(0.8, 0.7, 300), result(0.8, 0.7, 550)])
    unfair = section("aspect", LEVERS["aspect"], "hourglass", 40, [result(0.8, 0.7, 276), result(0.8, 0.7, 879)])
    assert "Not a fair pair" not in fair
    assert "Not a fair pair: 276 steps against 879" in unfair


def test_reuse_takes_only_a_checkpoint_that_trained_the_arms_full_minutes(tmp_path):
    import torch

    argv = train_argv("hourglass", Path("c.npz"), tmp_path, 15, 2, LEVERS["partial-bodies"].arms[0])
    assert not finished(argv)
    (tmp_path / "hourglass").mkdir()
    torch.save({"state": {"elapsed": 14 * 60.0}}, tmp_path / "hourglass" / "checkpoint.pt")
    assert not finished(argv)  # an interrupted run is trained again, not scored half-way
    torch.save({"state": {"elapsed": 15 * 60.0 + 3}}, tmp_path / "hourglass" / "checkpoint.pt")
    assert finished(argv)
