"""``poseserve`` command line: serve | export | train | cache | eval | report.

Torch-free commands (serve) import nothing from the training side, so the serving
install (no ``train`` extra) runs ``poseserve serve``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ARCHITECTURES = ("deeppose", "tompson", "cpm", "ief", "hourglass")


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    uvicorn.run("app.main:app", host=args.host, port=args.port, workers=1,
                timeout_graceful_shutdown=args.graceful_timeout, access_log=False)


def _cache(args: argparse.Namespace) -> None:
    from models.data import build_cache, data_dir

    print(build_cache(data_dir(args.data), args.out, args.size))


def _train(args: argparse.Namespace) -> None:
    from models.train import train

    print(train(args))


def _export(args: argparse.Namespace) -> None:
    from export.onnx_export import export_checkpoint

    ids = ARCHITECTURES if args.model == "all" else (args.model,)
    for model_id in ids:
        checkpoint = args.checkpoint or Path("runs") / model_id / "checkpoint.pt"
        manifest = export_checkpoint(model_id, checkpoint, args.out, flip_test=args.flip_test)
        print(f"{model_id}: {args.out / manifest['onnx']} params={manifest['params']} "
              f"parity={manifest['parity_max_abs_error']:.2e}")


def _quantize(args: argparse.Namespace) -> None:
    from export.quantize import calibration_crops, quantize_int8

    for model_id in (ARCHITECTURES if args.model == "all" else (args.model,)):
        path = args.onnx_dir / f"{model_id}.onnx"
        size = json.loads(path.with_suffix(".json").read_text())["input"]["size"]
        print(quantize_int8(path, calibration_crops(args.cache, size, args.count)))


def _eval(args: argparse.Namespace) -> None:
    from models.evaluate import accuracy_summary, evaluate

    result = evaluate(args.model, data=args.data, onnx_path=args.onnx, checkpoint=args.checkpoint,
                      limit=args.limit)
    print(json.dumps(result, indent=2))
    if args.write_manifest:
        from export.onnx_export import write_manifest

        manifest_path = Path(args.onnx).with_suffix(".json")
        manifest = json.loads(manifest_path.read_text())
        manifest["accuracy"] = accuracy_summary(result)
        write_manifest(manifest_path, manifest)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="poseserve", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="run the HTTP service (configure with POSE_* variables)")
    p.add_argument("--host", default="0.0.0.0")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--graceful-timeout", type=int, default=20,
                   help="seconds in-flight requests get to finish on SIGTERM")
    p.set_defaults(func=_serve)

    p = sub.add_parser("cache", help="decode LSP+LSPET once into a crop cache (.npz)")
    p.add_argument("--data", help="datasets folder (default: $POSE_DATA_DIR or ../shared/datasets)")
    p.add_argument("--out", type=Path, default=Path("cache/lsp96.npz"))
    p.add_argument("--size", type=int, default=96)
    p.set_defaults(func=_cache)

    p = sub.add_parser("train", help="train one architecture on the crop cache")
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["train"]:  # importing the training loop costs a torch import
        from models.train import add_arguments

        add_arguments(p)
    p.set_defaults(func=_train)

    p = sub.add_parser("export", help="checkpoint → ONNX + manifest, with a parity check")
    p.add_argument("--model", required=True, choices=(*ARCHITECTURES, "all"))
    p.add_argument("--checkpoint", type=Path, help="default runs/<model>/checkpoint.pt")
    p.add_argument("--out", type=Path, default=Path("models/onnx"))
    p.add_argument("--flip-test", action="store_true",
                   help="average with the mirrored image's prediction (2x the compute)")
    p.set_defaults(func=_export)

    p = sub.add_parser("quantize", help="int8 variant <id>-int8.onnx, calibrated on training crops")
    p.add_argument("--model", required=True, choices=(*ARCHITECTURES, "all"))
    p.add_argument("--onnx-dir", type=Path, default=Path("models/onnx"))
    p.add_argument("--cache", type=Path, default=Path("cache/lsp96.npz"))
    p.add_argument("--count", type=int, default=256, help="calibration crops")
    p.set_defaults(func=_quantize)

    p = sub.add_parser("eval", help="PCK on the LSP test half (im1001-im2000)")
    p.add_argument("--model", required=True, choices=ARCHITECTURES)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--onnx", type=Path, help="an exported model (what the service runs)")
    src.add_argument("--checkpoint", type=Path, help="a PyTorch training checkpoint")
    p.add_argument("--data", help="datasets folder (default: $POSE_DATA_DIR or ../shared/datasets)")
    p.add_argument("--limit", type=int, default=0, help="evaluate only the first N test images")
    p.add_argument("--write-manifest", action="store_true",
                   help="store the result as the ONNX model's manifest 'accuracy'")
    p.set_defaults(func=_eval)

    p = sub.add_parser("report", help="regenerate docs/accuracy.md and its plots")
    p.add_argument("--onnx-dir", type=Path, default=Path("models/onnx"))
    p.add_argument("--runs", type=Path, default=Path("runs"))
    p.add_argument("--data", help="datasets folder")
    p.add_argument("--out", type=Path, default=Path("docs"))
    p.add_argument("--limit", type=int, default=0, help="only the first N test images (smoke runs)")
    p.set_defaults(func=lambda a: __import__("models.report", fromlist=["main"]).main(a))

    for name, module_name, helptext in (
            ("bench", "benchmarks.bench", "latency/throughput benchmark, written as a markdown table"),
            ("soak", "benchmarks.soak", "drive a real server with concurrent clients; latency, errors, RSS"),
            ("profile", "benchmarks.profile", "where a request's CPU time goes in the server (py-spy)"),
            ("ab", "benchmarks.ab", "this checkout's server against another checkout's, alternating requests"),
            ("release", "export.release", "checkpoints → shipped ONNX + manifests + report + int8 decisions")):
        p = sub.add_parser(name, help=helptext)
        if argv[:1] == [name]:
            module = __import__(module_name, fromlist=["main", "add_arguments"])
            module.add_arguments(p)
            p.set_defaults(func=module.main)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main(sys.argv[1:])
