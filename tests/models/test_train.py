"""Training options that ablation runs rely on: builder options from the command line and
the heatmap target width."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from models.train import parse_options, pose_loss  # noqa: E402


def test_builder_options_parse_numbers_as_numbers():
    assert parse_options(["stacks=1", "bound=0.2", "backbone=mobilenet_v2"]) == {
        "stacks": 1, "bound": 0.2, "backbone": "mobilenet_v2"}
    for bad in ("stacks", "=1", "two words=1"):
        with pytest.raises(ValueError):
            parse_options([bad])


def test_the_zero_prediction_loss_grows_with_the_target_width():
    """Predicting all zeros costs the targets' energy, ∝ sigma²: wider targets make the
    'predict nothing' plateau more expensive, which is why they train out of it sooner."""
    joints = torch.full((2, 14, 2), 0.5)
    valid = torch.ones(2, 14, dtype=torch.bool)
    zeros = [torch.zeros(2, 14, 32, 32)]
    narrow = pose_loss("heatmap", zeros, joints, valid, sigma=1.0).item()
    wide = pose_loss("heatmap", zeros, joints, valid, sigma=2.0).item()
    assert wide / narrow == pytest.approx(4.0, rel=0.05)
    exact = [torch.exp(-((torch.arange(32) + 0.5 - 16) ** 2).view(1, 32) / 8
                       - ((torch.arange(32) + 0.5 - 16) ** 2).view(32, 1) / 8).expand(2, 14, 32, 32)]
    assert pose_loss("heatmap", exact, joints, valid, sigma=2.0).item() == pytest.approx(0.0, abs=1e-6)


def test_a_widened_fine_tune_trains_and_reloads_at_its_new_width(tmp_path):
    """``--init`` with ``--width``: the run starts from the release widened, trains, and its
    checkpoint rebuilds the wider network."""
    import argparse

    from models import train
    from models.checkpoint import load_checkpoint, save_checkpoint
    from tests.helpers import TINY, fake_cache, tiny_checkpoint

    release = tmp_path / "hourglass.pt"
    save_checkpoint(release, tiny_checkpoint("hourglass"))
    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    wide = 2 * TINY["hourglass"]["width"]
    args = parser.parse_args(["--model", "hourglass", "--init", str(release), "--width", str(wide),
                              "--cache", str(fake_cache(tmp_path / "c.npz")), "--out", str(tmp_path / "runs"),
                              "--batch", "8", "--max-epochs", "1"])
    ckpt = load_checkpoint(train.train(args))
    assert ckpt.state["epoch"] == 1 and ckpt.config["arch"]["width"] == wide
    assert ckpt.model.heads[0].in_channels == wide
