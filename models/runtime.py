"""The one onnxruntime session factory: every graph in the project is opened here.

Why one: the service, evaluation, the release's latency measurements, quantization
calibration and the benchmarks must run a graph with the same options, or a number
measured offline is not the number served. Torch-free (the serving install uses it).
"""
from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("poseserve.runtime")


def choose_providers(device: str = "cpu") -> list[str]:
    """CUDA first when onnxruntime offers it (onnxruntime-gpu) and not forced to CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        log.warning("POSE_DEVICE=cuda but onnxruntime offers only %s; using CPU", available)
    return ["CPUExecutionProvider"]


def create_session(path: Path | str, threads: int = 0, providers: list[str] | None = None,
                   cpu_arena: bool = True):
    """An ``InferenceSession`` with full graph optimisation and ``threads`` intra-op threads.

    ``threads=0`` lets onnxruntime choose (all cores); inter-op parallelism stays at 1
    because these graphs are sequential chains. ``cpu_arena=False``: activations are
    allocated per run and freed after it, instead of in an arena that grows to the
    largest batch ever seen and never shrinks (the server's choice: bounded memory).
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = cpu_arena
    # Idle intra-op threads sleep instead of spinning: with the detector's and a pose model's
    # sessions taking turns on the same cores, spinning threads of one stole the other's
    # cores (a photo's detect + pose went from 52 to 96 ms).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initialisers etc. are noise here
    return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
