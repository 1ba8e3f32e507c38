"""``poseserve lever``: one training lever, measured alone on two short runs.

A release usually changes several things at once (data, trunk, input size), so its gain
is their sum. This command isolates one lever: two ``poseserve train`` runs (fresh, or
both fine-tuning the released weights) that differ in that lever only (same architecture,
cache, recipe, seed and wall-clock minutes), run one after the other so each has every
core, then both checkpoints scored the same way: PCK@0.2 on the LSP test half and on coco_dev (person-box crops as the
service makes them, no flip; coco_dev's photos kept at their true aspect, also split by the
COCO set they come from, and beside them its photos stored squashed to a square).
Equal minutes, not equal images: a lever that makes training slower pays for it, which
is the comparison that matters on a fixed machine; the images each arm saw are reported.
Run it on an otherwise idle machine: equal minutes are equal compute only then (anything
else running, a test suite say, takes its share from whichever arm it overlaps).

The table goes to ``docs/levers.md``, one section per lever (other levers' sections are
kept), and the raw results to ``docs/results/lever-<name>.json``.
"""
from __future__ import annotations

import argparse
import json
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

START = "<!-- lever:{name} -->"
END = "<!-- /lever:{name} -->"


@dataclass(frozen=True)
class Arm:
    label: str
    flags: tuple[str, ...]  # ``poseserve train`` flags that override the campaign's recipe


@dataclass(frozen=True)
class Lever:
    question: str
    arms: tuple[Arm, Arm]


FINE_TUNE = ("--init", "models/weights/{model}.pt", "--lr", "5e-4")  # from the release, half the fresh lr

LEVERS: dict[str, Lever] = {
    "trunk": Lever("an ImageNet-pretrained trunk vs MoveNet Lightning's pose-trained trunk",
                   (Arm("ImageNet MobileNetV2", ("--backbone", "mobilenet_v2")),
                    Arm("MoveNet Lightning trunk", ("--backbone", "movenet")))),
    "input-size": Lever("128 px vs 192 px input (the same MoveNet trunk)",
                        (Arm("128 px", ("--input-size", "128")), Arm("192 px", ("--input-size", "192")))),
    # Augmentation pays off late, so it is measured as a fine-tune of the released weights
    # (a fresh short run would charge it for slowing the first epochs down).
    "partial-bodies": Lever("the released weights fine-tuned with the usual augmentation vs also half-body "
                            "crops and random erasing (probability 0.3 each)",
                            (Arm("usual augmentation", FINE_TUNE),
                             Arm("+ half-body crops and erasing", (*FINE_TUNE, "--half-body", "0.3", "--occlusion", "0.3")))),
    # A fresh 256 px run would start 4 epochs behind the release; fine-tuning both from it
    # asks the question that matters: does the release gain by seeing finer crops?
    "finetune-size": Lever("the released weights fine-tuned at 192 px vs at 256 px (fully convolutional models)",
                           (Arm("192 px", (*FINE_TUNE, "--input-size", "192")),
                            Arm("256 px", (*FINE_TUNE, "--input-size", "256")))),
    # The data's natural mix is 47 % COCO crops (5,660 of 11,957); coco_dev is everyday photos.
    "coco-share": Lever("the released weights fine-tuned on the cache's natural mix (47 % COCO crops) vs "
                        "70 % COCO crops per epoch",
                        (Arm("natural mix", FINE_TUNE), Arm("70 % COCO", (*FINE_TUNE, "--coco-share", "0.7")))),
    # Half of coco_dev's photos were stored squashed to squares; the training crops were
    # restored to their true aspect, so the model has never seen a squashed person.
    "aspect": Lever("the released weights fine-tuned with the usual augmentation vs also aspect jitter "
                    "(probability 0.5, width against height up to 4:3 either way)",
                    (Arm("usual augmentation", FINE_TUNE),
                     Arm("+ aspect jitter", (*FINE_TUNE, "--aspect", "0.5")))),
    # For the weaker architectures: the released default model as teacher on the same crops.
    "distill": Lever("the released weights fine-tuned on the labels vs also on the released hourglass's "
                     "heatmaps (alpha 0.5) and its confident points for unlabelled joints",
                     (Arm("labels", FINE_TUNE),
                      Arm("+ hourglass teacher", (*FINE_TUNE, "--teacher", "models/weights/hourglass.pt",
                                                  "--distill", "0.5")))),
    # IEF's corrector, unrolled from a fixed start, can ignore the pose it is fed (see
    # models/architectures/ief.py); noise on that pose makes reading it pay.
    "pose-jitter": Lever("the released weights fine-tuned as usual vs with Gaussian noise (std 0.05 crop "
                         "widths) on the starting pose, so the corrector must read the pose (IEF)",
                         (Arm("usual", FINE_TUNE), Arm("+ pose jitter", (*FINE_TUNE, "--pose-jitter", "0.05")))),
    # Capacity: the released network widened in place (``models.checkpoint.widen``: it
    # starts computing exactly what the release does), against the release as it is.
    "width": Lever("the released weights fine-tuned at their width vs widened to 128 features "
                   "(hourglass: the top-down half and the later stack; the trunk is unchanged)",
                   (Arm("released width", FINE_TUNE), Arm("width 128", (*FINE_TUNE, "--width", "128")))),
}


def train_argv(model: str, cache: Path, out: Path, minutes: float, threads: int, arm: Arm) -> list[str]:
    """The arm's ``poseserve train`` arguments: the campaign's recipe, then the arm's flags
    (argparse keeps the last value given, so they override; ``{model}`` in a flag is the
    model's id). With ``--init`` the arm fine-tunes the released weights, whose own trunk
    and (unless the arm sets one) input size then apply."""
    fresh = () if "--init" in arm.flags else ("--input-size", "192", "--backbone", "movenet")
    return ["--model", model, "--cache", str(cache), "--out", str(out), "--restart", *fresh,
            "--sigma", "2", "--lr", "1e-3",
            "--minutes", f"{minutes:g}", "--threads", str(threads), "--bf16", "--channels-last",
            *(flag.format(model=model) for flag in arm.flags)]


def parse_train_args(argv: list[str]) -> argparse.Namespace:
    from models import train

    parser = argparse.ArgumentParser()
    train.add_arguments(parser)
    return parser.parse_args(argv)


def finished(argv: list[str]) -> bool:
    """Whether the arm's checkpoint already exists and has trained its full minutes."""
    from models.checkpoint import read_state, run_checkpoint

    args = parse_train_args(argv)
    path = run_checkpoint(args.out, args.model)
    return path.exists() and read_state(path).get("elapsed", 0.0) >= args.minutes * 60


def run_arm(argv: list[str], data: str | None, reuse: bool = False) -> dict:
    """Train the arm (or, with ``reuse``, take its finished checkpoint as it is), then score
    it on LSP test and coco_dev."""
    from models.checkpoint import load_checkpoint
    from models.evaluate import evaluate, evaluate_coco, runner_for
    from models.train import train

    reused = reuse and finished(argv)
    args = parse_train_args([a for a in argv if a != "--restart"] if reused else argv)
    t0 = time.time()
    ckpt_path = train(args)  # resuming a finished run trains nothing
    state = load_checkpoint(ckpt_path).state
    runner = runner_for(None, ckpt_path)  # the checkpoint's graph, built once for the three scores
    lsp = evaluate(args.model, data=data, checkpoint=ckpt_path, runner=runner)
    coco = evaluate_coco(args.model, data=data, checkpoint=ckpt_path, runner=runner)
    squashed = evaluate_coco(args.model, data=data, checkpoint=ckpt_path, runner=runner, squashed=True)
    return {"command": "poseserve train " + shlex.join(argv), "reused": reused, "epochs": state["epoch"],
            "steps": state["step"], "images_seen": state["step"] * args.batch,
            "train_minutes": round(state["elapsed"] / 60, 1),
            "wall_minutes": round((time.time() - t0) / 60, 1), "lsp_pck@0.2": lsp["pck@0.2"],
            "coco_dev_pck@0.2": coco["pck@0.2"], "coco_dev_by_split": coco.get("pck@0.2_by_split", {}),
            "coco_dev_squashed_pck@0.2": squashed["pck@0.2"]}


def section(name: str, lever: Lever, model: str, minutes: float, results: list[dict]) -> str:
    """The lever's markdown section. Arms are budgeted in minutes, not steps, so work run
    beside one arm costs it steps (the clock charges a busier machine in full): an arm
    with less than half the other's steps is flagged rather than read as the lever's effect."""
    splits = sorted({s for r in results for s in r["coco_dev_by_split"]})
    squashed = all("coco_dev_squashed_pck@0.2" in r for r in results)  # scored since the aspect lever
    head = ["arm", "images seen (epochs)", "LSP test PCK@0.2", "coco_dev PCK@0.2",
            *[f"coco_dev {s}" for s in splits], *(["coco_dev squashed photos"] if squashed else [])]
    rows = [[arm.label, f"{r['images_seen']:,} ({r['epochs']})", f"{r['lsp_pck@0.2']:.3f}",
             f"{r['coco_dev_pck@0.2']:.3f}", *[f"{r['coco_dev_by_split'].get(s, float('nan')):.3f}" for s in splits],
             *([f"{r['coco_dev_squashed_pck@0.2']:.3f}"] if squashed else [])]
            for arm, r in zip(lever.arms, results)]
    a, b = results
    lines = [START.format(name=name), f"## {name}: {lever.question}", "",
             f"`poseserve lever {name} --model {model} --minutes {minutes:g}` "
             f"(each arm {minutes:g} training minutes; measured {time.strftime('%Y-%m-%d')}). "
             f"{lever.arms[1].label} − {lever.arms[0].label}: "
             f"**{100 * (b['lsp_pck@0.2'] - a['lsp_pck@0.2']):+.1f}** points on LSP, "
             f"**{100 * (b['coco_dev_pck@0.2'] - a['coco_dev_pck@0.2']):+.1f}** on coco_dev.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
             *["| " + " | ".join(r) + " |" for r in rows], "",
             *[f"- {arm.label}: `{r['command']}`" + (" (a finished checkpoint of this recipe, scored, not retrained)"
                                                     if r.get("reused") else "")
               for arm, r in zip(lever.arms, results)],
             *([f"- Not a fair pair: {min(a['steps'], b['steps'])} steps against {max(a['steps'], b['steps'])} "
                "in the same minutes (work beside the slower arm?); delete its --out folder and rerun the "
                "lever with `--reuse`, which keeps the other arm."]
               if max(a["steps"], b["steps"]) > 2 * min(a["steps"], b["steps"]) else []),
             END.format(name=name)]
    return "\n".join(lines)


def write_section(doc: Path, name: str, text: str) -> None:
    """Replace lever ``name``'s section of ``doc`` (or append it); the others stay."""
    header = ("# Training levers, one at a time\n\nEach section: two runs of `poseserve train` (fresh, or both "
              "fine-tuning the released weights, as the section's commands show) that "
              "differ in one lever only, the same wall-clock minutes each on the same cache, scored the "
              "same way (PCK@0.2, person-box crops, no flip). Written by `poseserve lever` "
              "(models/levers.py).\n")
    old = doc.read_text() if doc.exists() else header
    start, end = START.format(name=name), END.format(name=name)
    if start in old and end in old:
        new = old[:old.index(start)] + text + old[old.index(end) + len(end):]
    else:
        new = old.rstrip("\n") + "\n\n" + text + "\n"
    doc.write_text(new)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("lever", choices=sorted(LEVERS))
    p.add_argument("--model", default="hourglass")
    p.add_argument("--cache", type=Path, default=Path("cache/person272.npz"))
    p.add_argument("--minutes", type=float, default=15.0, help="training minutes per arm")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("runs/levers"))
    p.add_argument("--data", help="datasets folder (default: $POSE_DATA_DIR or ../shared/datasets)")
    p.add_argument("--docs", type=Path, default=Path("docs"))
    p.add_argument("--reuse", action="store_true",
                   help="score an arm whose checkpoint (in its --out folder) already trained the full "
                        "minutes instead of training it again, e.g. an arm two levers share, copied there")


def main(args: argparse.Namespace) -> None:
    lever = LEVERS[args.lever]
    results = []
    for i, arm in enumerate(lever.arms):
        argv = train_argv(args.model, args.cache, args.out / f"{args.lever}-{i}", args.minutes, args.threads, arm)
        results.append(run_arm(argv, args.data, args.reuse))
        print(arm.label, json.dumps(results[-1]), flush=True)
    (args.docs / "results").mkdir(parents=True, exist_ok=True)
    (args.docs / "results" / f"lever-{args.lever}.json").write_text(json.dumps(
        {"lever": args.lever, "model": args.model, "arms": [a.label for a in lever.arms], "results": results},
        indent=1))
    write_section(args.docs / "levers.md", args.lever, section(args.lever, lever, args.model, args.minutes, results))
