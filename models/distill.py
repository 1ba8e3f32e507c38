"""Distillation: a trained heatmap model's answers as extra training targets.

Why: the weaker architectures train on the same crops as the default model but see only
the labels, and the labels have holes: COCO has no neck or head top, LSP/LSPET no face
points, and a joint the annotator could not place is missing. A teacher (the released
hourglass, say) has an answer for every joint of every crop. Following Zhang et al.
(*Fast Human Pose Estimation*, CVPR 2019), a heatmap student regresses a blend of the
labels' Gaussians and the teacher's heatmaps, ``(1 - alpha) * labels + alpha * teacher``;
every student, heatmap or coordinate, also trains the joints its sample does not label
where the teacher is confident (peak ≥ ``min_score``), at the teacher's point.

The teacher runs on exactly the student's augmented batch (no gradient), so both see the
same crop, resampled to the teacher's own input size; its heatmaps are resized to the
student's heatmap grid.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from models.checkpoint import Checkpoint, load_checkpoint, target_sigma
from models.inference import InferenceGraph

DEFAULT_MIN_SCORE = 0.5  # a teacher peak below this is a guess, not an answer


@dataclass
class Targets:
    """The teacher's answer for one batch, and how much of it the student learns."""

    keypoints: torch.Tensor  # (N, K, 2) normalised crop coordinates
    scores: torch.Tensor  # (N, K) heatmap peaks
    heatmaps: torch.Tensor  # (N, K, H, W)
    alpha: float
    min_score: float

    def fill(self, joints: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Unlabelled joints the teacher is confident of take its point and count in the loss."""
        add = (mask == 0) & (self.scores >= self.min_score)
        joints = torch.where(add[..., None], self.keypoints.to(joints.dtype), joints)
        return joints, torch.where(add, torch.ones_like(mask), mask)

    def blend(self, target: torch.Tensor) -> torch.Tensor:
        """Label Gaussians blended with the teacher's heatmaps on the student's grid."""
        teacher = self.heatmaps.float()
        if teacher.shape[-2:] != target.shape[-2:]:
            teacher = F.interpolate(teacher, size=target.shape[-2:], mode="bilinear", align_corners=False)
        return (1 - self.alpha) * target + self.alpha * teacher


class Teacher:
    """A heatmap model's checkpoint or released weights, frozen, answering batches."""

    def __init__(self, path: Path, student: Checkpoint, alpha: float,
                 min_score: float = DEFAULT_MIN_SCORE, bf16: bool = False, channels_last: bool = False) -> None:
        ckpt = load_checkpoint(path)
        if ckpt.model.output_kind != "heatmaps":
            raise ValueError(f"{path}: a teacher must be a heatmap model, not {ckpt.arch_id}")
        if (ckpt.mean, ckpt.std) != (student.mean, student.std):
            raise ValueError(f"{path} normalises its input differently from the student: "
                             "it would see other pixels than the student does")
        teacher_joints, student_joints = ckpt.model.num_keypoints, getattr(student.model, "num_keypoints", None)
        if teacher_joints != student_joints:
            raise ValueError(f"{path} predicts {teacher_joints} joints, the student {student_joints}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"--distill {alpha}: a blend weight in [0, 1]")
        for p in ckpt.model.parameters():
            p.requires_grad_(False)
        if channels_last:
            ckpt.model = ckpt.model.to(memory_format=torch.channels_last)
        self.graph = InferenceGraph(ckpt.model, sigma=target_sigma(ckpt)).eval()
        self.input_size = ckpt.input_size  # a model trained at 256 px is not one at 192
        self.alpha, self.min_score, self.bf16 = alpha, min_score, bf16
        self.description = f"{ckpt.arch_id} teacher ({path}), alpha {alpha}, min score {min_score}"

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> Targets:
        if x.shape[-1] != self.input_size:  # the same crop, resampled to the size it was trained at
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.bf16):
            keypoints, _, scores, heatmaps, _ = self.graph(x)
        return Targets(keypoints.float(), scores.float(), heatmaps.float(), self.alpha, self.min_score)
