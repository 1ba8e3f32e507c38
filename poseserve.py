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
    "cache": ("models.data", "decode LSP+LSPET once into a crop cache (.npz)"),
    "train": ("models.train", "train one architecture on the crop cache (resumable)"),
    "eval": ("models.evaluate", "PCK on the LSP test half (and coco_dev) of an ONNX file or checkpoint"),
    "eval-pipeline": ("models.evaluate_pipeline", "whole photos: person recall, matched PCK on LSP, COCO keypoint AP"),
    "export": ("export.onnx_export", "checkpoint → ONNX + manifest, with a parity check"),
    "quantize": ("export.quantize", "int8 variant <id>-int8.onnx, calibrated on training crops"),
    "report": ("export.report", "measure the shipped models; regenerate docs/accuracy.md"),
    "detector": ("export.detector", "ship the pretrained person detector (YOLOX-Nano) with its manifest"),
    "release": ("export.release", "checkpoints → shipped ONNX + weights + report + int8/fp16 decisions"),
    "train-speed": ("benchmarks.train_speed", "training img/s: fp32 vs channels_last vs bf16 autocast"),
    "bench": ("benchmarks.bench", "latency/throughput benchmark, written as a markdown table"),
    "soak": ("benchmarks.soak", "drive a real server with concurrent clients; latency, errors, RSS"),
    "stress": ("benchmarks.stress", "attack a loopback server: bursts, expensive images, stalled clients"),
    "profile": ("benchmarks.profile", "where a request's CPU time goes in the server (py-spy)"),
    "ab": ("benchmarks.ab", "this checkout's server against another checkout's, alternating requests"),
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="poseserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    for name, (module_name, helptext) in COMMANDS.items():
        p = sub.add_parser(name, help=helptext, description=helptext)
        if argv[:1] == [name]:
            module = importlib.import_module(module_name)
            module.add_arguments(p)
            p.set_defaults(func=module.main)
    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
