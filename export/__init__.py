"""From checkpoints to the shipped model directory (``models/onnx``), measured.

    onnx_export  checkpoint → ONNX + typed manifest, parity-checked (``poseserve export``)
    quantize     int8 variants calibrated on training crops (``poseserve quantize``)
    report       measures every shipped model, writes ``accuracy`` and docs/accuracy.md
    release      the whole pipeline in one command (``poseserve release``)

The only writer of manifests. Imports ``models``, never ``app``.
"""
