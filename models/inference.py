"""The inference graph: what every exported model computes, in one output contract.

Training returns raw per-stage outputs; serving wants decoded keypoints. This wrapper
turns any architecture into the same named outputs, so that export, evaluation of a
checkpoint and evaluation of an ONNX file all read the same thing:

- ``keypoints``       (N, K, 2): final estimate, normalised crop coordinates in [0, 1]
- ``stage_keypoints`` (N, T, K, 2): the estimate after every stage/stack/iteration
- ``heatmaps``        (N, K, H, W) at 1/4 of the input resolution: the last stage's
  prediction for heatmap models; for coordinate regressors (DeepPose, IEF), Gaussians
  *rendered* at the regressed points (the manifest's ``heatmap_source`` says which), so
  every model answers in the same shape and the service needs no rendering code
- heatmap models only: ``scores`` (N, K), the decoded peak value, and
  ``stage_heatmaps`` (N, T, K, H, W).
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from models.heatmaps import HEATMAP_SIGMA, HEATMAP_STRIDE, decode_heatmaps, render_gaussians
from models.keypoints import FLIP_PERMUTATION


def output_names(output_kind: str) -> list[str]:
    if output_kind == "heatmaps":
        return ["keypoints", "stage_keypoints", "scores", "heatmaps", "stage_heatmaps"]
    return ["keypoints", "stage_keypoints", "heatmaps"]


def flip_back(stage: torch.Tensor, output_kind: str) -> torch.Tensor:
    """Map a prediction made on the mirrored image back onto the original.

    Mirroring swaps the person's sides, so joint i of the mirrored prediction is joint
    FLIP_PERMUTATION[i] of the original (the same table augmentation uses; a model with
    fewer joints predicts its prefix).
    """
    perm = list(FLIP_PERMUTATION[:stage.shape[1]])
    if output_kind == "heatmaps":
        return stage.flip(-1)[:, perm]
    mirrored = torch.stack([1 - stage[..., 0], stage[..., 1]], -1)
    return mirrored[:, perm]


class InferenceGraph(nn.Module):
    """``flip_test``: also run the mirrored image and average (the usual test-time flip).

    ``refine``, ``sigma``: how heatmaps are decoded (``models.heatmaps.decode_heatmaps``);
    ``sigma`` is the training targets' width (``models.checkpoint.target_sigma``), which
    the "dark" decoding blurs with.

    ``fp16``: run the network in half precision (a copy; the given model is untouched)
    while the input, the flip averaging and the decoding stay float32. The network is
    where half precision pays (tensor cores, half the memory traffic); the decode is a
    handful of ops on tiny tensors where fp16 would only cost precision: an fp16
    coordinate near 1.0 is quantised to 1/2048, and argmax ties multiply.
    """

    def __init__(self, model: nn.Module, flip_test: bool = False, fp16: bool = False,
                 refine: str = "dark", sigma: float = HEATMAP_SIGMA) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).half() if fp16 else model
        self.output_kind: str = model.output_kind
        self.flip_test = flip_test
        self.fp16 = fp16
        self.refine, self.sigma = refine, sigma  # the heatmap decoding (models.heatmaps)

    def network(self, image: torch.Tensor) -> list[torch.Tensor]:
        if not self.fp16:
            return self.model(image)
        return [stage.float() for stage in self.model(image.half())]

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        stages = self.network(image)
        if self.flip_test:
            mirrored = self.network(image.flip(-1))
            stages = [(a + flip_back(b, self.output_kind)) / 2 for a, b in zip(stages, mirrored)]
        if self.output_kind == "coordinates":
            side = image.shape[-1] // HEATMAP_STRIDE
            rendered = render_gaussians(stages[-1], side, side, HEATMAP_SIGMA)
            return stages[-1], torch.stack(stages, 1), rendered
        decoded = [decode_heatmaps(h, self.refine, self.sigma) for h in stages]
        stage_kp = torch.stack([d[..., :2] for d in decoded], 1)
        return (decoded[-1][..., :2], stage_kp, decoded[-1][..., 2], stages[-1],
                torch.stack(stages, 1))
