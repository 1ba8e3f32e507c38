"""The one onnxruntime session factory: every graph in the project is opened here.

Why one: the service, evaluation, the release's latency measurements, quantization
calibration and the benchmarks must run a graph with the same options, or a number
measured offline is not the number served. Torch-free (the serving install uses it).
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path
from typing import Literal

log = logging.getLogger("poseserve.runtime")

CpuArena = Literal["off", "shared", "per-session"]


def choose_providers(device: str = "cpu") -> list[str]:
    """CUDA first when onnxruntime offers it (onnxruntime-gpu) and not forced to CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        log.warning("POSE_DEVICE=cuda but onnxruntime offers only %s; using CPU", available)
    return ["CPUExecutionProvider"]


@functools.cache
def register_shared_arena() -> None:
    """One CPU arena for every session of the process (onnxruntime's environment allocator),
    growing by exactly what a run asks for (``kSameAsRequested``), once per process."""
    import onnxruntime as ort

    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))


def create_session(path: Path | str, threads: int = 0, providers: list[str] | None = None,
                   cpu_arena: CpuArena = "per-session", profile_prefix: str | None = None):
    """An ``InferenceSession`` with full graph optimisation and ``threads`` intra-op threads.

    ``threads=0`` lets onnxruntime choose (all cores); inter-op parallelism stays at 1
    because these graphs are sequential chains. ``cpu_arena`` decides where activations
    live. ``per-session`` (onnxruntime's default): each session's arena grows to the
    largest batch it ever ran and keeps it, so memory is the sum over every model and
    pool slot. ``off``: allocated per run and returned after it, though the process's
    allocator keeps much of it anyway. ``shared`` (the server's choice): one arena for the
    whole process, so what stays allocated is the most that ran *at once*, not the sum
    over models. Measured on the worst requests (``poseserve bench-arena``): peak RSS 746 MB
    shared, 810 MB off, 1191 MB per-session; whole-photo latency equal within 2 %.
    ``profile_prefix``: onnxruntime's profiler on, its JSON written under this prefix when
    the session's ``end_profiling()`` is called (``poseserve profile-ops``).
    """
    import onnxruntime as ort

    providers = providers or ["CPUExecutionProvider"]
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.enable_cpu_mem_arena = cpu_arena != "off"
    if cpu_arena == "shared" and providers[0] == "CPUExecutionProvider":
        register_shared_arena()
        options.add_session_config_entry("session.use_env_allocators", "1")
    # Idle intra-op threads sleep instead of spinning: with the detector's and a pose model's
    # sessions taking turns on the same cores, spinning threads of one stole the other's
    # cores (a photo's detect + pose went from 52 to 96 ms).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # warnings about unused initialisers etc. are noise here
    if profile_prefix is not None:
        options.enable_profiling = True
        options.profile_file_prefix = profile_prefix
    return ort.InferenceSession(str(path), options, providers=providers)
