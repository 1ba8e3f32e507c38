"""Dataset loaders (on a generated miniature of the LSP/LSPET layouts) and augmentation."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

torch = pytest.importorskip("torch")
scipy_io = pytest.importorskip("scipy.io")

from models.data import (  # noqa: E402
    CachedSplit,
    Sample,
    build_cache,
    coco_train_split,
    describe_cache,
    half_body_framing,
    load_coco_people,
    load_lsp,
    load_lspet,
    make_batch,
    match_detection,
    occlude,
    write_cache,
)
from models.transforms import person_box  # noqa: E402
from models.keypoints import FLIP_PERMUTATION, NUM_KEYPOINTS  # noqa: E402
from models.metrics import pck_summary  # noqa: E402

MEAN, STD = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)


@pytest.fixture
def fake_datasets(tmp_path):
    """2000 LSP + 310 LSPET entries in the real file layouts; only a few real images."""
    rng = np.random.default_rng(0)
    (tmp_path / "lsp" / "images").mkdir(parents=True)
    (tmp_path / "lspet" / "images").mkdir(parents=True)
    lsp = np.zeros((3, 14, 2000))
    lsp[0] = rng.uniform(20, 80, (14, 2000))
    lsp[1] = rng.uniform(20, 100, (14, 2000))
    lsp[2, 5, 0] = 1  # occluded flag: still annotated in LSP
    scipy_io.savemat(tmp_path / "lsp" / "joints.mat", {"joints": lsp})
    lspet = np.zeros((14, 3, 310))
    lspet[:, 0] = rng.uniform(20, 80, (14, 310))
    lspet[:, 1] = rng.uniform(20, 100, (14, 310))
    lspet[:, 2] = 1
    lspet[4, :, 0] = (0, -20, 0)  # un-annotated joint with garbage coordinates
    scipy_io.savemat(tmp_path / "lspet" / "joints.mat", {"joints": lspet})
    img = Image.new("RGB", (100, 120), (80, 90, 100))
    for i in range(2000):
        img.save(tmp_path / "lsp" / "images" / f"im{i + 1:04d}.jpg")
    for i in range(310):
        img.save(tmp_path / "lspet" / "images" / f"im{i + 1:05d}.jpg")
    return tmp_path, lsp, lspet


def test_loaders_normalise_array_order_and_visibility(fake_datasets):
    root, lsp, lspet = fake_datasets
    a, b = load_lsp(root), load_lspet(root)
    assert len(a) == 2000 and len(b) == 310
    np.testing.assert_allclose(a[0].joints[:14], lsp[:2, :, 0].T)
    assert a[0].valid[:14].all(), "LSP's flag means occluded, not missing"
    assert a[0].joints.shape == (NUM_KEYPOINTS, 2) and not a[0].valid[14:].any(), "no face points in LSP"
    np.testing.assert_allclose(b[0].joints[:14], lspet[:, :2, 0])
    assert not b[0].valid[4] and b[0].valid.sum() == 13
    assert a[0].path.endswith("im0001.jpg") and b[0].path.endswith("im00001.jpg")


def test_cache_keeps_the_standard_split(fake_datasets, tmp_path):
    root, _, _ = fake_datasets
    cache = build_cache(root, tmp_path / "c.npz", size=32, workers=1, framing="joints")
    train, val, test = (CachedSplit(cache, s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (1000 + 10, 300, 1000)
    assert train.images.shape[1:] == (32, 32, 3) and train.images.dtype == np.uint8
    assert train.joints.shape[1:] == (NUM_KEYPOINTS, 2) and not CachedSplit.has(cache, "val_coco")
    assert describe_cache(cache).startswith("LSP im0001-im1000 + LSPET: 1010 people")


def _coco_folder(root, people_per_photo=(2, 1, 3)):
    """A miniature coco_train: crops named <coco id>_<k>.jpg, COCO-17 keypoints in crop pixels."""
    import json

    folder = root / "coco_train"
    (folder / "images").mkdir(parents=True)
    images, anns = [], []
    for photo, count in enumerate(people_per_photo):
        for k in range(count):
            i = len(images)
            name = f"{1000 + photo}_{k}.jpg"
            Image.new("RGB", (60, 80), (90, 90, 90)).save(folder / "images" / name)
            kp = np.zeros((17, 3))
            kp[5:] = (30, 40, 2)           # shoulders … ankles labelled
            kp[0] = (31, 10, 1)             # nose labelled, hidden
            kp[13] = (0, 0, 0)              # left knee unlabelled
            images.append({"id": i, "file_name": name, "width": 60, "height": 80})
            anns.append({"id": i, "image_id": i, "category_id": 1, "iscrowd": 0, "keypoints": kp.ravel().tolist(),
                         "bbox": [10.0, 5.0, 40.0, 70.0], "num_keypoints": 12, "area": 2800.0})
    (folder / "person_keypoints.json").write_text(json.dumps({"images": images, "annotations": anns}))
    return folder


def test_coco_people_land_on_the_19_joints_with_their_box(tmp_path):
    from models.keypoints import KEYPOINT_NAMES

    people = load_coco_people(_coco_folder(tmp_path))
    assert len(people) == 6 and people[0].box == (10.0, 5.0, 40.0, 70.0)
    p = people[0]
    named = dict(zip(KEYPOINT_NAMES, p.valid))
    assert named["nose"] and named["right_ankle"] and not named["left_knee"], "v=1 kept, v=0 masked"
    assert not named["neck"] and not named["head_top"] and not named["left_eye"]
    assert tuple(p.joints[KEYPOINT_NAMES.index("nose")]) == (31, 10)


def test_coco_validation_holds_out_whole_photos(tmp_path):
    people = load_coco_people(_coco_folder(tmp_path))
    train, val = coco_train_split(people, val_photos=1)
    photo = lambda s: s.path.rsplit("/", 1)[1].split("_")[0]  # noqa: E731
    assert {photo(s) for s in val} == {"1002"} and len(val) == 3
    assert not {photo(s) for s in train} & {photo(s) for s in val}


def test_the_cache_adds_coco_train_and_frames_every_person_on_a_box(fake_datasets, tmp_path):
    root, _, _ = fake_datasets
    _coco_folder(root, people_per_photo=(1,) * 160)
    cache = build_cache(root, tmp_path / "c.npz", size=32, workers=1, framing="joints")
    assert len(CachedSplit(cache, "train")) == 1010 + 10 and len(CachedSplit(cache, "val_coco")) == 150
    # person framing: COCO's box (10, 5, 40, 70) is kept (no detector run for it), and the
    # crop is 1.75 x 70 around its centre (30, 40), where the left shoulder sits
    from models.data import CACHE_MARGIN, _crop_one, detector_boxes

    (person,) = detector_boxes(load_coco_people(root / "coco_train")[:1])
    assert person.box == (10.0, 5.0, 40.0, 70.0)
    _, joints = _crop_one((person, 32, CACHE_MARGIN))
    np.testing.assert_allclose(joints[9], (0.5, 0.5), atol=1e-6)


def test_a_person_without_a_box_takes_the_detection_that_holds_their_joints():
    joints = np.zeros((NUM_KEYPOINTS, 2))
    joints[:14] = np.stack([np.linspace(100, 140, 14), np.linspace(50, 200, 14)], 1)
    valid = np.zeros(NUM_KEYPOINTS, bool)
    valid[:14] = True
    s = Sample("x.jpg", joints, valid)
    other, theirs = (0.0, 0.0, 60.0, 200.0), (90.0, 30.0, 60.0, 185.0)
    assert match_detection(s, [other, theirs]) == theirs
    # nobody found: the joint box grown by 10 %
    x, y, w, h = match_detection(s, [other])
    assert (x, y, w, h) == pytest.approx((98.0, 42.5, 44.0, 165.0))


def test_person_box_ignores_unannotated_joints():
    joints = np.array([[10.0, 10.0]] * 13 + [[-500.0, -500.0]])
    joints[0] = (30, 50)
    valid = np.ones(14, bool)
    valid[13] = False
    assert person_box(joints, valid) == (10.0, 10.0, 20.0, 40.0)


def _dot_split(points: np.ndarray, size: int = 96) -> CachedSplit:
    """A cache split whose images have one bright dot at joint 0 (and nothing else)."""
    split = CachedSplit.__new__(CachedSplit)
    n = len(points)
    split.images = np.zeros((n, size, size, 3), np.uint8)
    for i, (u, v) in enumerate(points):
        split.images[i, int(v * size) - 1:int(v * size) + 2, int(u * size) - 1:int(u * size) + 2] = 255
    split.joints = np.repeat(points[:, None, :], NUM_KEYPOINTS, 1).astype(np.float32)
    split.valid = np.zeros((n, NUM_KEYPOINTS), bool)
    split.valid[:, 0] = True  # only joint 0 is "annotated": the flip moves that flag too
    split.context = 1.25 / 1.75
    return split


@pytest.mark.parametrize("aspect", [0.0, 1.0])
def test_augmentation_moves_joints_with_the_pixels(aspect):
    points = np.array([[0.4, 0.35], [0.6, 0.62], [0.45, 0.58], [0.55, 0.4]] * 4)
    split = _dot_split(points)
    x, joints, valid = make_batch(split, np.arange(len(points)), 64, MEAN, STD, augment=True,
                                  rng=np.random.default_rng(3), aspect=aspect)
    for i in range(len(points)):
        img = x[i].sum(0)
        row, col = divmod(int(img.argmax()), 64)
        (k,) = valid[i].nonzero()[0].tolist()  # joint 0, or joint 5 if mirrored
        assert k in (0, FLIP_PERMUTATION[0])
        j = joints[i, k]
        assert abs((col + 0.5) / 64 - float(j[0])) < 2.5 / 64
        assert abs((row + 0.5) / 64 - float(j[1])) < 2.5 / 64


def test_aspect_jitter_stretches_width_against_height_and_keeps_the_area():
    """Joints 1 and 2 sit one step right of and one step below joint 0. Whatever the scale,
    rotation and flip, the crop maps those steps to vectors of equal length at a right
    angle; aspect jitter makes the horizontal one w times the vertical one's length (w in
    [3/4, 4/3]), still at a right angle, enclosing the same area."""
    n = 64
    split = CachedSplit.__new__(CachedSplit)
    split.images = np.zeros((n, 32, 32, 3), np.uint8)
    split.joints = np.full((n, NUM_KEYPOINTS, 2), 0.5, np.float32)
    split.joints[:, :3] = [[0.4, 0.4], [0.6, 0.4], [0.4, 0.6]]
    split.valid = np.zeros((n, NUM_KEYPOINTS), bool)
    split.valid[:, 0] = True  # shows which samples the flip mirrored
    split.context = 0.9
    perm = list(FLIP_PERMUTATION[:NUM_KEYPOINTS])

    def steps(aspect: float) -> torch.Tensor:
        _, joints, valid = make_batch(split, np.arange(n), 32, MEAN, STD, augment=True,
                                      rng=np.random.default_rng(7), aspect=aspect)
        mirrored = valid[:, perm[0]]
        joints[mirrored] = joints[mirrored][:, perm]  # back to the input's joint order
        return torch.stack([joints[:, 1] - joints[:, 0], joints[:, 2] - joints[:, 0]], -1).double()

    plain, jittered = steps(0.0), steps(1.0)
    for m in (plain, jittered):
        gram = m @ m.transpose(1, 2)
        assert torch.allclose(gram[:, 0, 1], torch.zeros(n, dtype=torch.float64), atol=1e-5), "still a right angle"
    width = lambda m: (m[:, :, 0].norm(dim=1) / m[:, :, 1].norm(dim=1)).numpy()  # noqa: E731
    assert np.allclose(width(plain), 1.0, atol=1e-4)
    w = width(jittered)
    assert (w >= 0.75 - 1e-4).all() and (w <= 4 / 3 + 1e-4).all()
    assert (w < 0.9).sum() > 5 and (w > 1.1).sum() > 5, "squashed and stretched both drawn"
    assert np.allclose(torch.linalg.det(jittered).abs(), torch.linalg.det(plain).abs(), rtol=1e-4)


def test_flip_swaps_left_and_right_labels():
    split = _dot_split(np.array([[0.3, 0.5]] * 64))
    _, joints, valid = make_batch(split, np.arange(64), 64, MEAN, STD, augment=True,
                                  rng=np.random.default_rng(0))
    flipped = valid[:, FLIP_PERMUTATION[0]]
    assert bool((flipped ^ valid[:, 0]).all())
    assert 10 < int(flipped.sum()) < 54, "about half the batch should be mirrored"
    # a mirrored right ankle at x≈0.3 becomes the left ankle at x≈0.7 (before scale/rotation)
    assert float(joints[flipped, FLIP_PERMUTATION[0], 0].mean()) > 0.5


def test_pck_counts_against_torso_size():
    gt = np.zeros((1, 14, 2))
    gt[0, 9] = (0, 0)     # left shoulder
    gt[0, 2] = (0, 100)   # right hip: torso = 100 px
    pred = gt.copy()
    pred[0, 0] += (19, 0)   # within 0.2 * 100
    pred[0, 1] += (21, 0)   # outside
    mean, per_joint = pck_summary(pred, gt, np.ones((1, 14), bool), 0.2)
    assert per_joint[0] == 1 and per_joint[1] == 0
    assert mean == pytest.approx(13 / 14)


def test_eval_runs_onnx_and_checkpoint_through_the_same_pipeline(fake_datasets, model_dir, tmp_path):
    """`poseserve eval` on an ONNX file and on the checkpoint it came from agree."""
    from models.checkpoint import save_checkpoint
    from models.evaluate import evaluate
    from tests.helpers import tiny_checkpoint

    root, _, _ = fake_datasets
    save_checkpoint(tmp_path / "c.pt", tiny_checkpoint("cpm"))
    a = evaluate("cpm", data=str(root), onnx_path=model_dir / "cpm.onnx", limit=40)
    b = evaluate("cpm", data=str(root), checkpoint=tmp_path / "c.pt", limit=40)
    assert a["dataset"].startswith("LSP test im1001-im1040 (40 images")
    assert len(a["per_stage_pck@0.2"]) == 3 and len(a["per_joint_pck@0.2"]) == 14
    assert a["pck@0.2"] == pytest.approx(b["pck@0.2"], abs=0.03)
    assert a["pck_curve"]["pck"][0] <= a["pck@0.1"] <= a["pck@0.2"] <= a["pck_curve"]["pck"][-1]


def _person(n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """n copies of one standing person in [0, 1] crop coordinates: head at the top, feet at
    the bottom, every joint labelled."""
    from models.keypoints import KEYPOINT_NAMES
    heights = {"head_top": 0.15, "neck": 0.25, "nose": 0.2, "left_eye": 0.19, "right_eye": 0.19,
               "left_ear": 0.2, "right_ear": 0.2, "right_shoulder": 0.28, "left_shoulder": 0.28,
               "right_elbow": 0.4, "left_elbow": 0.4, "right_wrist": 0.5, "left_wrist": 0.5,
               "right_hip": 0.55, "left_hip": 0.55, "right_knee": 0.7, "left_knee": 0.7,
               "right_ankle": 0.85, "left_ankle": 0.85}
    one = np.array([[0.45 if n_.startswith("right") else 0.55 if n_.startswith("left") else 0.5, heights[n_]]
                    for n_ in KEYPOINT_NAMES])
    return np.repeat(one[None], n, 0), np.ones((n, len(KEYPOINT_NAMES)), bool)


def test_half_body_framing_frames_one_half_of_the_body():
    from models.keypoints import LOWER_BODY, UPPER_BODY
    joints, valid = _person(64)
    extent, centre, chosen = half_body_framing(joints, valid, 0.7, np.random.default_rng(0), 1.0)
    assert chosen.all()
    upper = np.isclose(centre[:, 1], (0.15 + 0.5) / 2)
    lower = np.isclose(centre[:, 1], (0.55 + 0.85) / 2)
    assert (upper | lower).all() and 10 < upper.sum() < 54, "upper or lower half, at random"
    assert np.allclose(extent[upper], 1.5 * 0.35) and np.allclose(extent[lower], 1.5 * 0.3)
    # every joint of the framed half lies inside the new crop
    for i in range(64):
        half = list(UPPER_BODY if upper[i] else LOWER_BODY)
        assert (np.abs(joints[i, half] - centre[i]) <= extent[i] / 2).all()
    # never: with probability 0, with too few joints labelled
    assert not half_body_framing(joints, valid, 0.7, np.random.default_rng(0), 0.0)[2].any()
    few = valid.copy()
    few[:, 6:] = False  # legs and hips only: 6 joints labelled
    assert not half_body_framing(joints, few, 0.7, np.random.default_rng(0), 1.0)[2].any()


def test_half_body_crops_zoom_onto_the_chosen_half():
    joints, valid = _person(32)
    split = CachedSplit.__new__(CachedSplit)
    split.images = np.zeros((32, 64, 64, 3), np.uint8)
    split.joints, split.valid, split.context = joints.astype(np.float32), valid, 0.9
    _, whole, _ = make_batch(split, np.arange(32), 32, MEAN, STD, augment=True, rng=np.random.default_rng(5))
    _, half, _ = make_batch(split, np.arange(32), 32, MEAN, STD, augment=True, rng=np.random.default_rng(5),
                            half_body=1.0)
    inside = lambda j: ((j >= 0) & (j <= 1)).all(-1).float().mean().item()  # noqa: E731
    assert inside(whole) > 0.95 and inside(half) < 0.8, "half-body crops leave the other half outside"


def test_occlusion_paints_one_rectangle_per_chosen_crop():
    images = torch.zeros(40, 3, 32, 32)
    occlude(images, np.random.default_rng(0), 0.5)
    painted = (images != 0).any(1)
    changed = painted.flatten(1).any(1)
    assert 5 < int(changed.sum()) < 35
    for mask in painted[changed]:
        rows, cols = mask.any(1).nonzero().ravel(), mask.any(0).nonzero().ravel()
        box = mask[rows.min():rows.max() + 1, cols.min():cols.max() + 1]
        assert box.all(), "one filled rectangle"
        assert 0.04 * 32 * 32 <= box.numel() <= 0.21 * 32 * 32


def test_an_epoch_takes_the_coco_share_asked_for_without_repeats_before_a_source_is_used_up(tmp_path):
    from models.data import LSP_ONLY_JOINTS, epoch_order
    from models.keypoints import KEYPOINT_NAMES

    assert [KEYPOINT_NAMES[i] for i in LSP_ONLY_JOINTS] == ["neck", "head_top"]
    valid = np.ones((100, NUM_KEYPOINTS), bool)
    valid[:30, 14:] = False  # 30 LSP people: no face points
    valid[30:, list(LSP_ONLY_JOINTS)] = False  # 70 COCO people: no neck, no head top
    valid[5, 13] = False  # an LSP person without a head top still has a neck
    split = CachedSplit(write_cache(tmp_path / "c.npz", {"train_images": np.zeros((100, 4, 4, 3), np.uint8),
                                                         "train_joints": np.zeros((100, NUM_KEYPOINTS, 2), np.float32),
                                                         "train_valid": valid}), "train")
    assert split.from_coco.sum() == 70 and not split.from_coco[:30].any()
    rng = np.random.default_rng(0)
    assert sorted(epoch_order(split, rng)) == list(range(100))  # natural: a permutation
    order = epoch_order(split, rng, 0.5)
    assert len(order) == 100 and split.from_coco[order].sum() == 50
    lsp = order[~split.from_coco[order]]
    assert len(lsp) == 50 and set(lsp) == set(range(30))  # all 30 seen, 20 of them twice
    assert len(set(order[split.from_coco[order]])) == 50  # 50 of 70: none repeated
    assert split.from_coco[epoch_order(split, rng, 1.0)].all()
    with pytest.raises(ValueError, match="fraction"):
        epoch_order(split, rng, 1.5)
