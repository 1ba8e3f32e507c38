"""Distillation (models/distill.py): the teacher's targets by hand, the loss they make, the
checks a teacher must pass, and a short ``poseserve train --teacher`` run end to end."""
from __future__ import annotations

import argparse

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from models.checkpoint import save_checkpoint  # noqa: E402
from models.distill import Targets, Teacher  # noqa: E402
from models.keypoints import NUM_KEYPOINTS  # noqa: E402
from models.train import pose_loss  # noqa: E402
from tests.helpers import TEST_INPUT, fake_cache, tiny_checkpoint  # noqa: E402


def targets(alpha: float = 0.5, k: int = 3, side: int = 8) -> Targets:
    keypoints = torch.tensor([[[0.25, 0.25], [0.5, 0.5], [0.75, 0.75]]])[:, :k]
    scores = torch.tensor([[0.9, 0.3, 0.8]])[:, :k]
    heatmaps = torch.full((1, k, side, side), 0.25)
    return Targets(keypoints, scores, heatmaps, alpha, min_score=0.5)


def test_unlabelled_joints_take_the_teachers_point_only_where_it_is_confident():
    joints = torch.tensor([[[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]])
    mask = torch.tensor([[1.0, 0.0, 0.0]])
    filled, weight = targets().fill(joints, mask)
    # joint 0 labelled: kept; joint 1 unlabelled, teacher unsure (0.3): still masked;
    # joint 2 unlabelled, teacher sure (0.8): its point, now trained
    assert torch.allclose(filled, torch.tensor([[[0.1, 0.1], [0.2, 0.2], [0.75, 0.75]]]))
    assert weight.tolist() == [[1.0, 0.0, 1.0]]


def test_the_blend_mixes_labels_and_teacher_on_the_students_grid():
    labels = torch.ones(1, 3, 4, 4)
    assert torch.allclose(targets(alpha=0.0).blend(labels), labels)
    assert torch.allclose(targets(alpha=1.0).blend(labels), torch.full_like(labels, 0.25))  # 8×8 resized to 4×4
    assert torch.allclose(targets(alpha=0.5).blend(labels), torch.full_like(labels, 0.625))


def test_a_student_that_matches_the_teacher_costs_nothing_at_alpha_one():
    t = targets(alpha=1.0)
    joints, valid = torch.rand(1, 3, 2), torch.tensor([[True, False, True]])
    assert pose_loss("heatmap", [t.heatmaps.clone()], joints, valid, teacher=t).item() == pytest.approx(0.0, abs=1e-6)
    # without the teacher, the same prediction is far from the label Gaussians
    assert pose_loss("heatmap", [t.heatmaps.clone()], joints, valid).item() > 1.0


def test_a_confident_teacher_adds_the_unlabelled_joint_to_a_regression_loss():
    t = targets()
    prediction = [torch.tensor([[[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]])]
    joints = prediction[0].clone()
    valid = torch.tensor([[True, False, False]])
    assert pose_loss("coordinates", prediction, joints, valid).item() == 0.0
    # the teacher puts joint 2 at (0.75, 0.75): 0.45² × 2 per joint, over 2 trained joints, × 100
    expected = (0.45 ** 2 * 2) / 2 * 100
    assert pose_loss("coordinates", prediction, joints, valid, teacher=t).item() == pytest.approx(expected, rel=1e-5)


def test_a_teacher_must_be_a_compatible_heatmap_model(tmp_path):
    student = tiny_checkpoint("cpm")
    save_checkpoint(tmp_path / "regressor.pt", tiny_checkpoint("deeppose"))
    with pytest.raises(ValueError, match="heatmap model"):
        Teacher(tmp_path / "regressor.pt", student, 0.5)
    other = tiny_checkpoint("hourglass")
    other.mean = (0.0, 0.0, 0.0)
    save_checkpoint(tmp_path / "other_mean.pt", other)
    with pytest.raises(ValueError, match="normalises"):
        Teacher(tmp_path / "other_mean.pt", student, 0.5)
    save_checkpoint(tmp_path / "hourglass.pt", tiny_checkpoint("hourglass"))
    with pytest.raises(ValueError, match="blend weight"):
        Teacher(tmp_path / "hourglass.pt", student, 1.5)
    teacher = Teacher(tmp_path / "hourglass.pt", student, 0.5)
    out = teacher(torch.rand(2, 3, TEST_INPUT, TEST_INPUT))
    assert out.heatmaps.shape[:2] == out.scores.shape == (2, NUM_KEYPOINTS) and not out.heatmaps.requires_grad
    # a student at another crop size: the teacher still sees the crop at its own size
    bigger = teacher(torch.rand(2, 3, 2 * TEST_INPUT, 2 * TEST_INPUT))
    assert bigger.heatmaps.shape == out.heatmaps.shape


def test_a_distilled_run_trains_and_records_its_teacher(tmp_path):
    from models import train
    from models.checkpoint import load_checkpoint

    save_checkpoint(tmp_path / "teacher.pt", tiny_checkpoint("hourglass"))
    student_init = tmp_path / "student.pt"
    save_checkpoint(student_init, tiny_checkpoint("cpm"))
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    args = parser.parse_args(["--model", "cpm", "--init", str(student_init), "--cache", str(fake_cache(tmp_path / "c.npz")),
                              "--out", str(tmp_path / "runs"), "--batch", "8", "--max-epochs", "1",
                              "--teacher", str(tmp_path / "teacher.pt"), "--distill", "0.5"])
    ckpt = load_checkpoint(train.train(args))
    assert ckpt.state["epoch"] == 1 and ckpt.state["step"] == 5
    assert ckpt.config["distilled_from"].startswith(f"hourglass teacher ({tmp_path / 'teacher.pt'}), alpha 0.5")
