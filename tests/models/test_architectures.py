"""The five architectures: shapes, sizes, gradients, learning, and the shared pieces."""
from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from models.architectures import ARCHITECTURES as ARCHS  # noqa: E402
from models.architectures import build_model  # noqa: E402
from models.architectures.registry import register  # noqa: E402
from models.heatmaps import decode_heatmaps, render_gaussians, soft_argmax  # noqa: E402
from models.inference import InferenceGraph, output_names  # noqa: E402
from models.keypoints import FLIP_PERMUTATION, KEYPOINT_NAMES, NUM_KEYPOINTS, SKELETON  # noqa: E402
from models.train import pose_loss  # noqa: E402
from tests.helpers import ARCHITECTURES, TEST_INPUT, tiny_model  # noqa: E402

# Default-size models (what `poseserve train` builds at 64x64): parameter budgets.
PARAM_RANGES = {"deeppose": (0.5e6, 3e6), "tompson": (0.2e6, 2e6), "cpm": (0.2e6, 2e6),
                "ief": (0.3e6, 3e6), "hourglass": (0.1e6, 2e6)}
STAGES = {"deeppose": 2, "tompson": 1, "cpm": 3, "ief": 4, "hourglass": 2}


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_output_shapes_and_stage_counts(name):
    model = tiny_model(name)
    outs = model(torch.randn(2, 3, TEST_INPUT, TEST_INPUT))
    assert len(outs) == STAGES[name]
    for o in outs:
        if model.output_kind == "heatmaps":
            assert o.shape == (2, NUM_KEYPOINTS, TEST_INPUT // 4, TEST_INPUT // 4)
        else:
            assert o.shape == (2, NUM_KEYPOINTS, 2)


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_default_size_parameter_budget(name):
    n = sum(p.numel() for p in build_model(name, input_size=64).parameters())
    lo, hi = PARAM_RANGES[name]
    assert lo <= n <= hi, f"{name}: {n} params outside [{lo}, {hi}]"


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_gradient_reaches_every_parameter(name):
    model = tiny_model(name).train()
    joints = torch.rand(2, NUM_KEYPOINTS, 2) * 0.6 + 0.2
    x = torch.randn(2, 3, TEST_INPUT, TEST_INPUT)
    valid = torch.ones(2, NUM_KEYPOINTS, dtype=torch.bool)
    # IEF zero-initialises its last layer (it starts exactly at the mean pose), which
    # blocks gradients for the very first step only: take one step, then check.
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    pose_loss(ARCHS[name].loss, model(x), joints, valid).backward()
    opt.step()
    opt.zero_grad()
    pose_loss(ARCHS[name].loss, model(x), joints, valid).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing[:5]}"


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_optimisation_steps_lower_the_loss_on_a_tiny_batch(name):
    torch.manual_seed(0)
    model = tiny_model(name).train()
    for m in model.modules():  # deterministic comparison: no dropout noise or jitter
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    if hasattr(model, "train_jitter"):
        model.train_jitter = 0.0
    x = torch.randn(4, 3, TEST_INPUT, TEST_INPUT)
    joints = torch.rand(4, NUM_KEYPOINTS, 2) * 0.6 + 0.2
    valid = torch.ones(4, NUM_KEYPOINTS, dtype=torch.bool)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = pose_loss(ARCHS[name].loss, model(x), joints, valid).item()
    for _ in range(15):
        loss = pose_loss(ARCHS[name].loss, model(x), joints, valid)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert pose_loss(ARCHS[name].loss, model(x), joints, valid).item() < first


def test_masked_joints_do_not_contribute_to_the_loss():
    model = tiny_model("hourglass").eval()
    outs = model(torch.randn(1, 3, TEST_INPUT, TEST_INPUT))
    joints = torch.rand(1, NUM_KEYPOINTS, 2)
    valid = torch.ones(1, NUM_KEYPOINTS, dtype=torch.bool)
    valid[0, 3] = False
    moved = joints.clone()
    moved[0, 3] = 1 - moved[0, 3]
    assert torch.isclose(pose_loss("heatmap", outs, joints, valid), pose_loss("heatmap", outs, moved, valid))


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_inference_graph_outputs_match_their_names(name):
    model = tiny_model(name)
    outs = InferenceGraph(model).eval()(torch.randn(3, 3, TEST_INPUT, TEST_INPUT))
    names = output_names(model.output_kind)
    assert len(outs) == len(names)
    got = dict(zip(names, outs))
    assert got["keypoints"].shape == (3, NUM_KEYPOINTS, 2)
    assert got["stage_keypoints"].shape == (3, STAGES[name], NUM_KEYPOINTS, 2)
    assert got["heatmaps"].shape == (3, NUM_KEYPOINTS, TEST_INPUT // 4, TEST_INPUT // 4)
    assert torch.equal(got["stage_keypoints"][:, -1], got["keypoints"])


def test_render_then_decode_recovers_points_within_a_quarter_cell():
    torch.manual_seed(1)
    pts = torch.rand(4, NUM_KEYPOINTS, 2) * 0.8 + 0.1
    decoded = decode_heatmaps(render_gaussians(pts, 32, 32, sigma=1.0))
    assert (decoded[..., :2] - pts).abs().max() < 0.5 / 32
    assert torch.allclose(decoded[..., 2], torch.ones(4, NUM_KEYPOINTS), atol=0.5)
    soft = soft_argmax(render_gaussians(pts, 32, 32, sigma=1.0) * 20)
    assert (soft - pts).abs().max() < 0.5 / 32


def test_taylor_refinement_is_exact_on_gaussians_where_the_quarter_step_is_not():
    torch.manual_seed(2)
    pts = torch.rand(4, NUM_KEYPOINTS, 2) * 0.8 + 0.1
    maps = render_gaussians(pts, 32, 32, sigma=1.5)
    taylor = (decode_heatmaps(maps, "taylor")[..., :2] - pts).abs().max() * 32
    quarter = (decode_heatmaps(maps, "quarter")[..., :2] - pts).abs().max() * 32
    assert taylor < 1e-3 < 0.1 < quarter  # in cells
    # flat or negative maps (an untrained net) never produce NaN or a step beyond half a cell
    odd = torch.cat([torch.zeros(1, NUM_KEYPOINTS, 8, 8), -torch.rand(1, NUM_KEYPOINTS, 8, 8)])
    out = decode_heatmaps(odd, "taylor")
    peak = odd.reshape(2, NUM_KEYPOINTS, -1).argmax(-1)
    centres = torch.stack([peak % 8, peak // 8], -1).float() + 0.5
    assert torch.isfinite(out).all() and ((out[..., :2] * 8 - centres).abs() <= 0.5 + 1e-5).all()


def test_dark_decoding_reads_a_noisy_peak_where_taylor_does_not():
    """A network's peak is a Gaussian with noise on it. Blurred with the targets' width
    before the Newton step ("dark"), the noise averages out; the raw maps' parabola
    ("taylor") chases it. Both are exact on a clean Gaussian."""
    torch.manual_seed(3)
    pts = torch.rand(8, NUM_KEYPOINTS, 2) * 0.6 + 0.2
    maps = render_gaussians(pts, 48, 48, sigma=2.0)
    for refine in ("dark", "taylor"):
        assert (decode_heatmaps(maps, refine, 2.0)[..., :2] - pts).abs().max() * 48 < 1e-3  # in cells
    noisy = maps + 0.1 * torch.randn(maps.shape)
    error = {r: ((decode_heatmaps(noisy, r, 2.0)[..., :2] - pts).norm(dim=-1) * 48).mean() for r in ("dark", "taylor")}
    assert error["dark"] < 0.15 < 0.3 < error["taylor"]
    assert torch.equal(decode_heatmaps(noisy, "dark", 2.0)[..., 2], noisy.flatten(2).max(2).values)  # the raw peak
    # flat, negative or random maps: finite, and never more than a cell from the peak
    odd = torch.cat([torch.zeros(1, NUM_KEYPOINTS, 8, 8), -torch.rand(1, NUM_KEYPOINTS, 8, 8),
                     torch.rand(1, NUM_KEYPOINTS, 8, 8)])
    out = decode_heatmaps(odd, "dark", 2.0)
    peak = odd.reshape(3, NUM_KEYPOINTS, -1).argmax(-1)
    centres = torch.stack([peak % 8, peak // 8], -1).float() + 0.5
    assert torch.isfinite(out).all() and ((out[..., :2] * 8 - centres).abs() <= 1 + 1e-5).all()
    with pytest.raises(ValueError, match="refine"):
        decode_heatmaps(maps, "soft")


def test_rendered_maps_hold_no_subnormal_floats():
    """A convolution reading subnormal inputs ran >10x slower on an x86 CPU (IEF's first
    layer reads the maps it renders): the tails must be exact zeros instead."""
    from models.heatmap_codec import render_gaussians as numpy_render

    pts = torch.tensor([[[0.5, 0.5], [0.05, 0.9]]])
    tiny = torch.finfo(torch.float32).tiny
    for maps in (render_gaussians(pts, 192, 192, 3.0), torch.from_numpy(numpy_render(pts.numpy(), 192, 192, 3.0))):
        assert not ((maps > 0) & (maps < tiny)).any()
        assert maps[0, 0, 96, 96] > 0.95 and maps[0, 0, 96, 60] == 0  # 36 cells = 12 sigma away


def test_ief_rendering_is_differentiable_in_the_pose():
    pts = torch.full((1, 1, 2), 0.5, requires_grad=True)
    render_gaussians(pts, 16, 16, 1.5)[0, 0, 4, 6].backward()
    assert pts.grad is not None and pts.grad.abs().sum() > 0


def test_flip_table_is_an_involution_that_swaps_sides():
    perm = FLIP_PERMUTATION
    assert sorted(perm) == list(range(NUM_KEYPOINTS))
    assert all(perm[perm[i]] == i for i in range(NUM_KEYPOINTS))
    for i, name in enumerate(KEYPOINT_NAMES):
        other = KEYPOINT_NAMES[perm[i]]
        assert other == name.replace("right", "LEFT").replace("left", "right").replace("LEFT", "left")
    assert all(0 <= a < NUM_KEYPOINTS and 0 <= b < NUM_KEYPOINTS for a, b in SKELETON)


def test_deeppose_patches_are_centred_on_the_joints():
    model = build_model("deeppose", input_size=32, width=4, fc=8).eval()
    image = torch.zeros(1, 3, 32, 32)
    image[0, :, 8, 24] = 1.0  # a bright pixel at normalised (24.5/32, 8.5/32)
    centres = torch.tensor([[[24.5 / 32, 8.5 / 32]] * NUM_KEYPOINTS])
    patch = model.patches(image, centres)[0, 0]
    p = model.patch_size
    assert patch.argmax() // p in (p // 2 - 1, p // 2) and patch.argmax() % p in (p // 2 - 1, p // 2)


def test_ief_starts_from_its_mean_pose():
    model = tiny_model("ief").eval()
    model.mean_pose.fill_(0.3)
    poses = model(torch.randn(2, 3, TEST_INPUT, TEST_INPUT))
    assert torch.allclose(poses[0], torch.full_like(poses[0], 0.3))
    # corrections are bounded
    for a, b in zip(poses[:-1], poses[1:]):
        assert (b - a).abs().max() <= model.bound + 1e-6


def test_ief_pose_jitter_moves_the_poses_f_sees_while_training_only():
    model = tiny_model("ief")
    model.mean_pose.fill_(0.3)
    model.pose_jitter = 0.05
    x = torch.randn(2, 3, TEST_INPUT, TEST_INPUT)
    poses = model.train()(x)
    assert not torch.allclose(poses[0], torch.full_like(poses[0], 0.3))  # y_0 shown with noise
    for a, b in zip(poses[:-1], poses[1:]):  # y_{t+1} = y_t + ε_t from the noisy start
        assert (b - a).abs().max() <= model.bound + 1e-6
    assert torch.allclose(model.eval()(x)[0], torch.full_like(poses[0], 0.3))  # inference: no noise


@pytest.mark.parametrize("backbone", [None, "mobilenet_v2"])
def test_ief_redrawn_pose_input_has_the_image_filters_spread_and_shows_in_the_first_features(backbone):
    model = build_model("ief", input_size=64, num_keypoints=NUM_KEYPOINTS, backbone=backbone).eval()
    first_bn = model.f.trunk.features[0][1] if backbone else model.f[0][1]
    seen: list[torch.Tensor] = []
    first_bn.register_forward_hook(lambda module, inputs, output: seen.append(inputs[0].clone()))
    x = torch.randn(1, 3, 64, 64)
    image = model.f.trunk.features[0][0].weight if backbone else model.f[0][0].weight[:, :3]
    image_before = image.detach().clone()
    with torch.no_grad():
        model(x)
        model.redraw_pose_input(1.0)
        model(x)
    pose = model.f.extra.weight if backbone else model.f[0][0].weight[:, 3:]
    assert torch.equal(image, image_before)  # the image's filters are untouched
    assert 0.8 < pose.std() / image.std() < 1.25
    assert (seen[0] - seen[model.steps]).abs().max() > 0.1  # the mean pose's maps now show


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(KeyError, match="unknown architecture"):
        build_model("alexnet")


def test_registry_entries_carry_paper_loss_and_one_builder_signature():
    assert set(ARCHS) == {"deeppose", "tompson", "cpm", "ief", "hourglass"}
    losses = {a.id: a.loss for a in ARCHS.values()}
    assert losses == {"deeppose": "coordinates", "ief": "bounded_correction", "tompson": "heatmap",
                      "cpm": "heatmap", "hourglass": "heatmap"}
    for arch in ARCHS.values():
        assert arch.paper and arch.builder(input_size=64).output_kind in ("heatmaps", "coordinates")
    with pytest.raises(ValueError, match="twice"):
        register("cpm", paper="x", loss="heatmap")(lambda input_size: None)


def test_hourglass_with_a_mobilenet_bottom_up_half_keeps_the_output_contract():
    from models.backbone import MobileNetV2Trunk

    model = build_model("hourglass", input_size=64, width=16, backbone="mobilenet_v2").eval()
    assert isinstance(model.first.trunk, MobileNetV2Trunk) and len(model.hourglasses) == 1
    outs = model(torch.randn(2, 3, 64, 64))
    assert [o.shape for o in outs] == [(2, NUM_KEYPOINTS, 16, 16)] * 2
    # torchvision's key layout, so the ImageNet state dict loads as-is
    keys = set(model.first.trunk.state_dict())
    assert {"features.0.0.weight", "features.1.conv.1.weight", "features.17.conv.3.running_var"} <= keys
    with pytest.raises(ValueError, match="backbone"):
        build_model("hourglass", backbone="resnet")


@pytest.mark.parametrize("backbone,source", [("mobilenet_v2", "ImageNet"), ("movenet", "MoveNet")])
@pytest.mark.parametrize("name", ARCHITECTURES)
def test_every_architecture_takes_the_pretrained_trunk_and_keeps_its_contract(name, backbone, source):
    from models.backbone import MobileNetV2Trunk, SameConv2d, pretrained_description

    torch.manual_seed(0)
    model = build_model(name, input_size=64, backbone=backbone).train()
    trunks = [m for m in model.modules() if isinstance(m, MobileNetV2Trunk)]
    assert len(trunks) == 1  # one pretrained network, shared where the paper shares one
    # MoveNet's weights were trained with SAME padding on the five stride-2 convolutions
    assert sum(isinstance(m, SameConv2d) for m in trunks[0].modules()) == (5 if backbone == "movenet" else 0)
    # the manifest says what was pretrained, on what, in this architecture's own words
    said = pretrained_description(model)
    assert said.startswith(source) and model.pretrained_part in said
    assert pretrained_description(tiny_model(name)) is None
    x = torch.randn(2, 3, 64, 64)
    outs = model(x)
    assert len(outs) == STAGES[name]
    shape = (2, NUM_KEYPOINTS, 16, 16) if model.output_kind == "heatmaps" else (2, NUM_KEYPOINTS, 2)
    assert all(o.shape == shape for o in outs)
    # every new part (projections, IEF's heatmap input weights, heads) is trained; the
    # zero-initialised layers (IEF's last layer and heatmap input) are nudged first, as
    # one training step would (a real step from a random trunk would blow up its BN).
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1 and not p.any():
                p.normal_(std=1e-3)
    joints = torch.rand(2, NUM_KEYPOINTS, 2) * 0.6 + 0.2
    valid = torch.ones(2, NUM_KEYPOINTS, dtype=torch.bool)
    pose_loss(ARCHS[name].loss, model(x), joints, valid).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f"no gradient for {missing[:5]}"
    with pytest.raises(ValueError, match="backbone"):
        build_model(name, input_size=64, backbone="resnet")


def test_ief_heatmap_input_starts_as_a_zero_widened_first_convolution():
    """The K heatmap channels join the pretrained first layer with zero weights: at
    initialisation the network's output is that of the RGB-only ImageNet network."""
    from models.backbone import PretrainedRegressor

    torch.manual_seed(0)
    net = PretrainedRegressor(64, 6, fc=8, extra_channels=NUM_KEYPOINTS, dropout=0.0).train()
    x, maps = torch.randn(2, 3, 64, 64), torch.rand(2, NUM_KEYPOINTS, 64, 64)
    with torch.no_grad():
        assert torch.equal(net(x, maps), net(x, torch.zeros_like(maps)))
        net.extra.weight.add_(0.1)
        assert not torch.allclose(net(x, maps), net(x, torch.zeros_like(maps)))


def test_imagenet_weights_load_into_the_trunk():
    from models.backbone import MobileNetV2Trunk, load_pretrained, pretrained_path

    if not pretrained_path().exists():
        pytest.skip("../shared/pretrained not present")
    trunk = load_pretrained(MobileNetV2Trunk())
    raw = torch.load(pretrained_path(), weights_only=True)
    assert torch.equal(trunk.state_dict()["features.5.conv.1.0.weight"], raw["features.5.conv.1.0.weight"])
    with torch.no_grad():
        feats = trunk.eval()(torch.zeros(1, 3, 128, 128))
    assert {s: tuple(f.shape[1:]) for s, f in feats.items()} == {
        4: (24, 32, 32), 8: (32, 16, 16), 16: (96, 8, 8), 32: (320, 4, 4)}


@pytest.mark.parametrize("name", ["hourglass", "ief"])
def test_flip_test_prediction_is_mirror_symmetric(name):
    """Averaging with the mirrored image's flipped-back prediction makes the result
    equivariant: the mirrored photo gets exactly the mirrored pose."""
    from models.inference import flip_back

    graph = InferenceGraph(tiny_model(name), flip_test=True).eval()
    x = torch.randn(2, 3, TEST_INPUT, TEST_INPUT)
    with torch.no_grad():
        a, b = graph(x), graph(x.flip(-1))
    i = 3 if name == "hourglass" else 2  # the heatmaps output
    assert torch.allclose(a[i], flip_back(b[i], "heatmaps"), atol=1e-5)
    if name == "ief":
        assert torch.allclose(a[0], flip_back(b[0], "coordinates"), atol=1e-5)


def test_flip_test_graph_exports_with_parity(tmp_path):
    from export.onnx_export import check_parity, export_onnx

    model = tiny_model("cpm")
    export_onnx(model, tmp_path / "cpm.onnx", TEST_INPUT, flip_test=True)
    assert check_parity(model, tmp_path / "cpm.onnx", TEST_INPUT, flip_test=True) < 1e-4


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_growing_14_joints_to_19_keeps_the_first_14_predictions(name):
    """A released 14-joint model grown to the 19 joints predicts, before any training,
    exactly what it did for the first 14 (new inputs enter with zero weights)."""
    from models.checkpoint import Checkpoint, grow_keypoints, load_checkpoint, save_checkpoint
    from tests.helpers import TINY

    torch.manual_seed(0)
    old = build_model(name, input_size=TEST_INPUT, num_keypoints=14, **TINY[name]).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics and IEF mean pose
        for m in old.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
        if hasattr(old, "mean_pose"):
            old.mean_pose.uniform_(0.3, 0.7)
    ckpt = Checkpoint(old, {"model": name, "input_size": TEST_INPUT, "arch": dict(TINY[name])}, (0.5,) * 3,
                      (0.5,) * 3, {})
    grown = grow_keypoints(ckpt, NUM_KEYPOINTS)
    assert grown.model.num_keypoints == NUM_KEYPOINTS and grown.config["arch"]["num_keypoints"] == NUM_KEYPOINTS
    x = torch.randn(2, 3, TEST_INPUT, TEST_INPUT)
    with torch.no_grad():
        before, after = old(x), grown.model(x)
    assert len(before) == len(after)
    for a, b in zip(before, after):
        assert b.shape[1] == NUM_KEYPOINTS
        assert torch.allclose(a, b[:, :14], atol=1e-5), f"{name}: the first 14 joints moved"


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_widening_keeps_what_the_network_computes(name):
    """A released network widened (more features) predicts, before any training, exactly
    what it did: its weights keep their places and new channels are read with zero
    weight. Where a block's channels are concatenated with another's, that cannot hold,
    and widening refuses rather than fine-tuning from a different network."""
    from models.checkpoint import widen
    from tests.helpers import TINY, tiny_checkpoint

    ckpt = tiny_checkpoint(name)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in ckpt.model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 2.0)
    width = 2 * TINY[name]["width"]
    if name in {"cpm", "tompson"}:
        with pytest.raises(ValueError, match="cannot be widened"):
            widen(ckpt, width)
        return
    wide = widen(ckpt, width)
    assert wide.config["arch"]["width"] == width and ckpt.config["arch"]["width"] == width // 2
    assert sum(p.numel() for p in wide.model.parameters()) > sum(p.numel() for p in ckpt.model.parameters())
    x = torch.randn(2, 3, TEST_INPUT, TEST_INPUT)
    with torch.no_grad():
        before, after = ckpt.model.eval()(x), wide.model.eval()(x)
    for a, b in zip(before, after, strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    assert widen(wide, width) is wide  # already that wide: nothing to do


def test_a_checkpoint_without_a_joint_count_is_an_lsp_14_model(tmp_path):
    """Checkpoints written before the face points have no num_keypoints: they load as 14;
    a saved checkpoint always records its count."""
    from models.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
    from tests.helpers import TINY

    model = build_model("cpm", input_size=TEST_INPUT, num_keypoints=14, **TINY["cpm"])
    raw = {"model": model.state_dict(), "config": {"model": "cpm", "input_size": TEST_INPUT, "arch": TINY["cpm"]},
           "mean": [0.5] * 3, "std": [0.5] * 3}
    torch.save(raw, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").model.num_keypoints == 14
    save_checkpoint(tmp_path / "new.pt", Checkpoint(tiny_model("cpm"), {"model": "cpm", "input_size": TEST_INPUT,
                                                                        "arch": TINY["cpm"]}, (0.5,) * 3, (0.5,) * 3))
    assert load_checkpoint(tmp_path / "new.pt").model.num_keypoints == NUM_KEYPOINTS


def test_movenet_trunk_same_padding_matches_an_explicitly_padded_reference():
    """SAME padding (zero rows/columns at the bottom/right of each stride-2 convolution) is
    what MoveNet's weights were trained with; on a real photo, the trunk's stride-8 output
    equals a reference that pads explicitly and convolves unpadded, with the same weights.
    The symmetric-padding trunk (what the ImageNet file uses) is measurably different."""
    import numpy as np
    import torch.nn.functional as F
    from PIL import Image

    from models.backbone import MobileNetV2Trunk, SameConv2d, load_pretrained, pretrained_path
    from tests.helpers import DATA

    photo = DATA / "lsp" / "images" / "im1001.jpg"
    if not pretrained_path("movenet").exists() or not photo.exists():
        pytest.skip("../shared (MoveNet trunk, LSP) not present")
    trunk = load_pretrained(MobileNetV2Trunk("movenet")).eval()
    with Image.open(photo) as im:
        rgb = np.asarray(im.convert("RGB").resize((192, 192)), np.float32)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None] / 127.5 - 1

    def reference(x: torch.Tensor, layers) -> torch.Tensor:
        """Every layer by hand: stride-2 convolutions get F.pad(0, 1, 0, 1) and padding 0."""
        for layer in layers:
            if isinstance(layer, torch.nn.Conv2d):
                if layer.stride == (2, 2):
                    x = F.conv2d(F.pad(x, (0, 1, 0, 1)), layer.weight, layer.bias, 2, 0, 1, layer.groups)
                else:
                    x = F.conv2d(x, layer.weight, layer.bias, layer.stride, layer.padding, 1, layer.groups)
            elif hasattr(layer, "use_skip"):
                y = reference(x, layer.conv)
                x = x + y if layer.use_skip else y
            elif isinstance(layer, torch.nn.Sequential):
                x = reference(x, layer)
            else:
                x = layer(x)
        return x

    with torch.no_grad():
        got = trunk(x)[8]
        want = reference(x, trunk.features[:7])
        symmetric = MobileNetV2Trunk("mobilenet_v2").eval()
        symmetric.load_state_dict(trunk.state_dict())
        shifted = symmetric(x)[8]
    assert sum(isinstance(m, SameConv2d) for m in trunk.modules()) == 5
    assert got.shape == (1, 32, 24, 24)
    assert (got - want).norm() / want.norm() < 1e-5
    assert (shifted - want).norm() / want.norm() > 0.05


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_a_checkpoint_moves_to_a_new_input_size_only_when_fully_convolutional(name):
    """Fine-tuning at a finer crop keeps every trained weight of a fully convolutional model
    (its heatmaps grow with the crop); a regressor reading the flattened map refuses."""
    from models.checkpoint import at_input_size
    from tests.helpers import tiny_checkpoint

    ckpt, size = tiny_checkpoint(name), TEST_INPUT + 32
    if name in {"deeppose", "ief"}:
        with pytest.raises(ValueError, match="cannot change its input size"):
            at_input_size(ckpt, size)
        return
    moved = at_input_size(ckpt, size)
    assert moved.input_size == size and ckpt.input_size == TEST_INPUT
    assert all(torch.equal(a, b) for a, b in zip(ckpt.model.state_dict().values(),
                                                  moved.model.state_dict().values()))
    with torch.no_grad():
        small, large = ckpt.model(torch.randn(1, 3, TEST_INPUT, TEST_INPUT)), moved.model(torch.randn(1, 3, size, size))
    assert large[-1].shape[-1] * TEST_INPUT == small[-1].shape[-1] * size


@pytest.mark.parametrize("name", ARCHITECTURES)
def test_an_early_exit_computes_exactly_the_first_stages(name):
    """The hourglass and CPM end after any of their stages: the shorter network, built from
    the same weights, returns exactly the full network's first outputs and drops the weights
    only later stages use. The others have no stage option and refuse."""
    from models.architectures import ARCHITECTURES as REGISTRY
    from models.checkpoint import first_stages, stage_count
    from tests.helpers import tiny_checkpoint

    ckpt = tiny_checkpoint(name)
    if REGISTRY[name].stage_option is None:
        assert name in {"tompson", "ief", "deeppose"}
        with pytest.raises(ValueError, match="no early exit"):
            first_stages(ckpt, 1)
        return
    total = stage_count(ckpt)
    assert total >= 2
    for bad in (0, total + 1):
        with pytest.raises(ValueError, match="cannot end after"):
            first_stages(ckpt, bad)
    assert first_stages(ckpt, total) is ckpt
    short = first_stages(ckpt, 1)
    assert short.config["arch"][REGISTRY[name].stage_option] == 1 and short.config["trained_stages"] == total
    assert sum(p.numel() for p in short.model.parameters()) < sum(p.numel() for p in ckpt.model.parameters())
    x = torch.randn(2, 3, TEST_INPUT, TEST_INPUT)
    with torch.no_grad():
        full, ends = ckpt.model(x), short.model(x)
    assert len(ends) == 1 and torch.equal(ends[0], full[0])
