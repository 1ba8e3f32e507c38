"""The ``poseserve`` command: a table of sub-command → the module that owns it.

Each module has ``add_arguments(parser)`` and ``main(args)``. Only the chosen command's
module is imported, so ``poseserve serve`` runs on the torch-free serving install and
``poseserve --help`` costs no torch import.
"""
from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS: dict[str, tuple[str, str]] = {
    "serve": ("app.serve", "run the HTTP service (configure with POSE_* variables)"),
    "predict": ("app.predict", "photos, videos and folders → COCO keypoint results JSON / JSON lines (and renders), no server"),
    "cache": ("models.data", "decode LSP+LSPET+coco_train once into a crop cache (.npz)"),
    "train": ("models.train", "train one architecture on the crop cache (resumable)"),
    "lever": ("models.levers", "one training lever measured alone: two short runs differing in it, both scored"),
    "eval": ("models.evaluate", "PCK on the LSP test half (and coco_dev) of an ONNX file or checkpoint"),
    "eval-pipeline": ("models.evaluate_pipeline", "whole photos: person recall, matched PCK on LSP, COCO keypoint AP"),
    "export": ("export.onnx_export", "checkpoint → ONNX + manifest, with a parity check"),
    "quantize": ("export.quantize", "int8 variant <id>-int8.onnx, calibrated on training crops"),
    "report": ("export.report", "measure the shipped models; regenerate docs/accuracy.md"),
    "detector": ("export.detector", "ship the pretrained person detector (YOLOX-Nano) with its manifest"),
    "release": ("export.release", "checkpoints → shipped ONNX + weights + report + int8/fp16 decisions"),
    "train-speed": ("benchmarks.train_speed", "training img/s: fp32 vs channels_last vs bf16 autocast"),
    "bench": ("benchmarks.bench", "latency/throughput benchmark, written as a markdown table"),
    "bench-arena": ("benchmarks.arena", "POSE_CPU_ARENA off / per-session / shared: crowd latency against memory"),
    "soak": ("benchmarks.soak", "drive a real server with concurrent clients; latency, errors, RSS"),
    "stress": ("benchmarks.stress", "attack a loopback server: bursts, expensive images, stalled clients"),
    "container-memory": ("benchmarks.container", "the serving image under compose's and Swarm's limits, hit with the worst requests"),
    "profile": ("benchmarks.profile", "where a request's CPU time goes in the server (py-spy)"),
    "profile-ops": ("benchmarks.ops", "a pose graph's kernel time by operator type (onnxruntime's profiler), batch 1 and 8"),
    "bench-video": ("benchmarks.video", "POST /pose/video: frames/s with 1 and 4 people, RSS over a long clip, /pose beside it"),
    "screenshot": ("benchmarks.screenshot", "docs/screenshot.png from today's page with the shipped models (chromium)"),
    "ab": ("benchmarks.ab", "this checkout's server against another checkout's, alternating requests"),
}


def extra_hint(command: str, exc: ModuleNotFoundError) -> str:
    """What to install for a command whose dependency is missing (torch, scipy: the train extra)."""
    missing = (exc.name or str(exc)).split(".")[0]
    return f"`poseserve {command}` needs the train extra ({missing} is not installed): pip install -e '.[train]'"


def needs_extra(p: argparse.ArgumentParser, hint: str) -> None:
    """A command whose module needs what this install lacks: ``--help`` still answers (with
    what to install), and running it exits 2 with one line instead of a traceback."""
    p.epilog = hint

    def refuse(_: argparse.Namespace) -> None:
        print(f"poseserve: {hint}", file=sys.stderr)
        raise SystemExit(2)

    p.set_defaults(func=refuse, any_arguments=True)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="poseserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, helptext) in COMMANDS.items():
        p = sub.add_parser(name, help=helptext, description=helptext)
        if argv[:1] == [name]:
            try:
                module = importlib.import_module(module_name)
                module.add_arguments(p)
            except ModuleNotFoundError as exc:  # the serving install has no torch / scipy
                needs_extra(p, extra_hint(name, exc))
                continue
            p.set_defaults(func=module.main)
    args, unknown = parser.parse_known_args(argv)
    if unknown and not getattr(args, "any_arguments", False):
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        args.func(args)
    except ModuleNotFoundError as exc:  # a lazily imported training/evaluation dependency
        print(f"poseserve: {extra_hint(args.command, exc)}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
