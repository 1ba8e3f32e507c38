"""``poseserve report``: measure the shipped models and regenerate docs/accuracy.md.

Everything in the report is measured by this script: PCK on the LSP test half and on
coco_dev's everyday photos through ``models.evaluate`` (the serving preprocessing), with
and without the test-time flip (``--models``: only those are measured again; the others
keep the results their release measured, in ``docs/results/``), sizes from the manifests, training curves from the per-epoch logs
(``runs/<id>/metrics.jsonl``, copied to ``docs/training/`` so the curves survive without
the checkpoints). It is the one writer of a manifest's ``accuracy`` (``record_accuracy``).
"""
from __future__ import annotations

import argparse
import json
import platform
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from models.architectures import ARCHITECTURES
from models.data import LSP_TEST, data_dir, load_lsp
from models.evaluate import PEERS_DIR, accuracy_summary, evaluate, evaluate_coco, movenet_runner, onnx_runner
from models.keypoints import LSP_KEYPOINT_NAMES, NUM_LSP_KEYPOINTS, JointSet, draw_skeleton
from models.manifest import PoseManifest, load_manifest
from models.transforms import CropBox, crop_square, person_box

ORDER = tuple(ARCHITECTURES)
def record_accuracy(manifest_path: Path, lsp: dict, coco: dict | None = None,
                    flipped: tuple[dict, dict] | None = None) -> PoseManifest:
    """Write measured accuracy into a manifest: the one place ``accuracy`` is written.
    ``flipped``: the LSP and coco_dev evaluations with the test-time flip."""
    manifest = load_manifest(manifest_path)
    assert isinstance(manifest, PoseManifest)
    manifest.accuracy = accuracy_summary(lsp, coco)
    if flipped is not None:
        manifest.accuracy["flip_test"] = {"pck@0.2": flipped[0]["pck@0.2"], "pck@0.1": flipped[0]["pck@0.1"],
                                          "coco_dev_pck@0.2": flipped[1]["pck@0.2"]}
    manifest.save(manifest_path)
    return manifest


def plot_training(runs: Path, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    (out / "training").mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    found = []
    for model_id in ORDER:
        log = runs / model_id / "metrics.jsonl"
        if log.exists():
            shutil.copy(log, out / "training" / f"{model_id}.jsonl")
        log = out / "training" / f"{model_id}.jsonl"
        if not log.exists():
            continue
        rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
        found.append(model_id)
        minutes = [r["elapsed_min"] for r in rows]
        ax1.plot(minutes, [r["train_loss"] / rows[0]["train_loss"] for r in rows], label=model_id)
        line, = ax2.plot(minutes, [r["val_pck_per_stage"][-1] for r in rows], label=f"{model_id} LSPET")
        if any("val_coco_pck_per_stage" in r for r in rows):
            coco = [(m, r["val_coco_pck_per_stage"][-1]) for m, r in zip(minutes, rows) if "val_coco_pck_per_stage" in r]
            ax2.plot(*zip(*coco), ls="--", color=line.get_color(), label=f"{model_id} coco_train")
    ax1.set(xlabel="training minutes", ylabel="train loss / first epoch's", title="Training loss")
    ax2.set(xlabel="training minutes", ylabel="PCK@0.2",
            title="Validation PCK@0.2 (held out: 300 LSPET; coco_train photos, dashed)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "training_curves.png", dpi=110)
    plt.close(fig)
    return found


def plot_pck_curves(results: dict[str, dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for model_id, r in results.items():
        ax.plot(r["pck_curve"]["thresholds"], r["pck_curve"]["pck"], label=f"{model_id} ({r['pck@0.2']:.3f})")
    ax.axvline(0.2, color="grey", ls=":", lw=1)
    ax.set(xlabel="normalised distance (× torso)", ylabel="PCK", ylim=(0, 1), xlim=(0, 0.5),
           title="PCK vs threshold, LSP test (1000 images)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(out / "pck_curves.png", dpi=110)
    plt.close(fig)


def example_grid(onnx_dir: Path, data: str | None, out: Path, images: tuple[int, ...] = (3, 17, 48, 105, 230)) -> None:
    """Rows: test photos; columns: ground truth then each model's prediction."""
    samples = [load_lsp(data_dir(data))[LSP_TEST[i]] for i in images]
    tile = 160
    ids = [m for m in ORDER if (onnx_dir / f"{m}.onnx").exists()]
    canvas = Image.new("RGB", (tile * (len(ids) + 1), tile * len(samples) + 18), "white")
    draw = ImageDraw.Draw(canvas)
    for c, label in enumerate(["ground truth", *ids]):
        draw.text((c * tile + 4, 3), label, fill=(0, 0, 0))
    runners = {m: onnx_runner(onnx_dir / f"{m}.onnx") for m in ids}
    for r, s in enumerate(samples):
        with Image.open(s.path) as im:
            img = im.convert("RGB")
        view = CropBox.around(*person_box(s.joints, s.valid), 1.4)
        def paste(xy: np.ndarray, col: int) -> None:
            joints = JointSet(len(xy))
            crop = Image.fromarray(crop_square(img, view, tile))
            canvas.paste(draw_skeleton(crop, view.to_crop(xy) * tile, joints.skeleton, joints.names, width=2),
                         (col * tile, 18 + r * tile))
        lsp = NUM_LSP_KEYPOINTS
        paste(s.joints[:lsp], 0)
        for c, m in enumerate(ids, start=1):
            crop, box = runners[m].crop(img, person_box(s.joints[:lsp], s.valid[:lsp]))
            paste(box.to_image(runners[m].run(runners[m].batch([crop]))[0, -1]), c)
    canvas.save(out / "examples.png")


def stage_cell(served: list[float], manifest: PoseManifest) -> str:
    """PCK@0.2 after each stage of the network as trained; where the served graph ends
    earlier (``early_exit``), the full network's stages measured by the release, and where
    it ends."""
    cut = manifest.early_exit
    if cut is None or cut.stage == cut.of:
        return " → ".join(f"{v:.3f}" for v in served)
    return " → ".join(f"{v:.3f}" for v in cut.lsp_per_stage) + f" (serves {cut.stage})"


def write_markdown(results: dict[str, dict], coco: dict[str, dict], manifests: dict[str, PoseManifest],
                   out: Path, peer: dict[str, dict] | None = None) -> None:
    """``manifests[m].accuracy["flip_test"]``, where measured, gives the *+ flip* columns."""
    lines = ["# Accuracy on LSP test (im1001–im2000) and on everyday photos (coco_dev)", "",
             "Generated by `poseserve report` (export/report.py) from the shipped ONNX files in",
             "`models/onnx/`: every number below was measured by that command (a release of some",
             "models measures those again and keeps the others' last measurement, `docs/results/`).",
             "LSP: the 1000 test photos at original resolution, each cropped around the box of its",
             "annotated joints exactly as `POST /pose?bbox=…` crops (1.25 × the box's long side); PCK",
             "with the torso (left shoulder ↔ right hip) as reference length, over the 14 LSP joints",
             "and over the 12 body joints LSP and COCO share (*body 12*: comparable with COCO-trained",
             "systems, which have no neck or head top). coco_dev: the same PCK@0.2 on the people of",
             "`../shared/datasets/coco_dev` (never trained on) in the photos kept at their original",
             "aspect ratio, cropped around COCO's person box, over the 12 body joints. Each model's",
             "training data and options are in its manifest's `training`; *trained on* abbreviates them.",
             "*+ flip*: the same with the test-time flip (`flip=true`: each crop and its mirror image,",
             "averaged; twice the pose-model compute).", "",
             "| model | params | GFLOPs | input | pretrained | trained on | LSP PCK@0.2 | + flip | body 12 | PCK@0.1 | "
             "PCK@0.2 per stage | coco_dev PCK@0.2 | + flip | epochs | train time | train img/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for m, r in results.items():
        man = manifests[m]
        t = man.training or {}
        stages = stage_cell(r["per_stage_pck@0.2"], man)
        speed = (f"{t['steps'] * t['batch'] / (t['train_minutes'] * 60):.0f}"
                 if t.get("steps") and t.get("batch") and t.get("train_minutes") else "?")
        data = str(t.get("data", "LSP + LSPET"))
        trained_on = ("LSP + LSPET + coco_train" if "coco_train" in data else "LSP + LSPET") + (
            ", person boxes" if "person boxes" in data else ", joint boxes")
        flip = (man.accuracy or {}).get("flip_test")
        lsp_flip, coco_flip = (f"{flip['pck@0.2']:.3f}", f"{flip['coco_dev_pck@0.2']:.3f}") if flip else ("–", "–")
        lines.append(f"| {m} | {man.params / 1e6:.2f} M | {man.flops / 1e9:.3f} | {man.input.size}² | "
                     f"{man.pretrained or 'no'} | {trained_on} | **{r['pck@0.2']:.3f}** | {lsp_flip} | "
                     f"{r['pck@0.2_body12']:.3f} | {r['pck@0.1']:.3f} | {stages} | {coco[m]['pck@0.2']:.3f} | "
                     f"{coco_flip} | {t.get('epochs', '?')} | {t.get('train_minutes', '?')} min | {speed} |")
    for m, r in (peer or {}).items():
        lines.append(f"| {m} (peer, not shipped) | – | – | 192² | COCO train2017 + Active (Google) | – | "
                     f"{r['lsp']['pck@0.2']:.3f} | – | {r['lsp']['pck@0.2_body12']:.3f} | {r['lsp']['pck@0.1']:.3f} | "
                     f"– | {r['coco']['pck@0.2']:.3f} | – | – | – | – |")
    lines += ["", "Per-stage columns: DeepPose = stage 1, cascade stage 2; CPM = stages 1–3; IEF =",
              "mean pose y0, then after each of the 3 corrections; hourglass = stack 1, stack 2.",
              "*(serves k)*: the served graph ends after stage k, the earliest within half a point of",
              "the last on LSP and coco_dev, because it is faster (docs/early_exit.md); the row's other",
              "numbers are the served graph's.",
              "The peer (MoveNet SinglePose Lightning v4 from `../shared/peers/`) goes through the same",
              "crops and PCK code; it predicts no neck or head top, so its 14-joint LSP figure counts",
              "those two as misses: compare *body 12*.", "",
              "## Per joint (PCK@0.2)", "",
              "| joint | " + " | ".join(results) + " |", "|---|" + "---|" * len(results)]
    for j in LSP_KEYPOINT_NAMES:
        lines.append(f"| {j} | " + " | ".join(f"{r['per_joint_pck@0.2'][j]:.3f}" for r in results.values()) + " |")
    lines += ["", "## Plots", "", "![PCK vs threshold](pck_curves.png)", "",
              "![training curves](training_curves.png)", "",
              "![examples](examples.png)", "",
              f"Hardware for training and this evaluation: {platform.machine()} CPU, 2 cores "
              f"(`{platform.processor() or platform.machine()}`), no GPU; GFLOPs: one crop through the",
              "graph (twice that with the flip).", ""]
    (out / "accuracy.md").write_text("\n".join(lines) + (out / "accuracy_notes.md").read_text()
                                     if (out / "accuracy_notes.md").exists() else "\n".join(lines))


def main(args: argparse.Namespace) -> None:
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    results, coco, manifests = {}, {}, {}
    measure = set(getattr(args, "models", None) or ORDER)
    for m in ORDER:
        path = args.onnx_dir / f"{m}.onnx"
        if not path.exists():
            continue
        kept = out / "results" / f"{m}.json"
        if m not in measure and kept.exists():  # not re-released: its measurement stands
            results[m] = json.loads(kept.read_text())
            coco[m] = results[m].pop("coco_dev")
            manifests[m] = load_manifest(path.with_suffix(".json"))
            continue
        runner = onnx_runner(path)
        results[m] = evaluate(m, data=args.data, onnx_path=path, limit=args.limit, runner=runner)
        coco[m] = evaluate_coco(m, data=args.data, onnx_path=path, runner=runner)
        flipped = None
        if not load_manifest(path.with_suffix(".json")).flip_test:  # else the plain numbers are flipped ones
            runner = onnx_runner(path, flip_test=True)
            flipped = (evaluate(m, data=args.data, onnx_path=path, limit=args.limit, runner=runner),
                       evaluate_coco(m, data=args.data, onnx_path=path, runner=runner))
        manifests[m] = record_accuracy(path.with_suffix(".json"), results[m], coco[m], flipped)
        print(f"{m}: LSP PCK@0.2 {results[m]['pck@0.2']:.3f} per stage {results[m]['per_stage_pck@0.2']}; "
              f"coco_dev {coco[m]['pck@0.2']:.3f}; with flip {flipped and flipped[0]['pck@0.2']}", flush=True)
    peer = {}
    if (PEERS_DIR / "movenet_lightning.onnx").exists():  # the yardstick, measured in the same run
        runner = movenet_runner()
        peer["movenet-lightning"] = {"lsp": evaluate("movenet-lightning", data=args.data, limit=args.limit,
                                                     runner=runner),
                                     "coco": evaluate_coco("movenet-lightning", data=args.data, runner=runner)}
    (out / "results").mkdir(exist_ok=True)
    for m, r in results.items():
        (out / "results" / f"{m}.json").write_text(json.dumps({**r, "coco_dev": coco[m]}, indent=1) + "\n")
    plot_training(args.runs, out)
    plot_pck_curves(results, out)
    example_grid(args.onnx_dir, args.data, out)
    write_markdown(results, coco, manifests, out, peer)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--onnx-dir", type=Path, default=Path("models/onnx"))
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--data", help="datasets folder")
    p.add_argument("--out", type=Path, default=Path("docs"))
    p.add_argument("--limit", type=int, default=0, help="only the first N test images (smoke runs)")
    p.add_argument("--models", nargs="+", choices=ORDER,
                   help="measure only these; the others keep the results in OUT/results/ (default: all)")
