"""Loading models from the model directory: manifest checks, sessions, warm-up.

Policy on startup faults (documented in the README): a model whose ONNX file is
missing, corrupt, fails its sha256, or whose graph does not match its manifest is
*not served*: it is logged, listed with its error under ``/models`` → ``unavailable``
and in ``/readyz`` (which then answers 503), and requests for it get 503. The other
models serve normally. No half-loaded model is ever reachable.

A model whose manifest names a ``requires_provider`` that this server does not run
(the fp16 variants: CUDA only) is *skipped*, not failed: it is listed under
``/models`` → ``skipped`` with the reason, requests for it get 404 saying why, and
readiness is unaffected — the same model directory serves a CPU and a GPU host.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from app.batching import MicroBatcher
from app.pool import SessionPool
from app.settings import Settings

log = logging.getLogger("poseserve.registry")
REQUIRED_MANIFEST_KEYS = ("id", "sha256", "input", "output_kind", "outputs", "keypoints", "skeleton")


class ModelLoadError(Exception):
    pass


class ModelSkipped(Exception):
    """A sound model this server does not serve (it needs a provider we do not run)."""


@dataclass
class LoadedModel:
    id: str
    manifest: dict
    pool: SessionPool
    output_names: list[str]
    batcher: MicroBatcher | None = None

    @property
    def runner(self) -> SessionPool | MicroBatcher:
        """What requests go through: the micro-batcher when enabled, else the pool."""
        return self.batcher or self.pool

    @property
    def input_size(self) -> int:
        return int(self.manifest["input"]["size"])

    @property
    def predicts_heatmaps(self) -> bool:
        return self.manifest["output_kind"] == "heatmaps"


@dataclass
class Registry:
    models: dict[str, LoadedModel] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def close(self) -> None:
        for m in self.models.values():
            m.runner.close()


def choose_providers(device: str) -> list[str]:
    """CUDA first when onnxruntime offers it (onnxruntime-gpu) and not forced to CPU."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device == "cuda":
        log.warning("POSE_DEVICE=cuda but onnxruntime offers only %s; using CPU", available)
    return ["CPUExecutionProvider"]


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def load_model(manifest_path: Path, settings: Settings) -> LoadedModel:
    """Verify one manifest + graph and open its session pool, warmed up."""
    import onnxruntime as ort

    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"unreadable manifest: {exc}") from None
    missing = [k for k in REQUIRED_MANIFEST_KEYS if k not in manifest]
    if missing:
        raise ModelLoadError(f"manifest lacks {missing}")
    onnx_path = manifest_path.with_name(manifest.get("onnx", f"{manifest_path.stem}.onnx"))
    if not onnx_path.exists():
        raise ModelLoadError(f"missing ONNX file {onnx_path.name}")
    if _sha256(onnx_path) != manifest["sha256"]:
        raise ModelLoadError(f"{onnx_path.name} does not match the sha256 in its manifest")
    providers = choose_providers(settings.device)
    required = manifest.get("requires_provider")
    if required and required not in providers:
        raise ModelSkipped(f"{manifest.get('variant', 'this')} variant is served only with {required}; "
                           f"this server runs {providers}")
    pool_size, threads = settings.threads_and_pool()
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        sessions = [ort.InferenceSession(str(onnx_path), options, providers=providers)
                    for _ in range(pool_size)]
    except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
        raise ModelLoadError(f"onnxruntime could not load {onnx_path.name}: {exc}") from None
    size = int(manifest["input"]["size"])
    inputs = sessions[0].get_inputs()
    if len(inputs) != 1 or list(inputs[0].shape[1:]) != [3, size, size]:
        raise ModelLoadError(f"graph input {[i.shape for i in inputs]} != manifest [N, 3, {size}, {size}]")
    names = [o.name for o in sessions[0].get_outputs()]
    if set(names) != set(manifest["outputs"]):
        raise ModelLoadError(f"graph outputs {names} != manifest outputs {list(manifest['outputs'])}")
    warm = {inputs[0].name: np.zeros((1, 3, size, size), np.float32)}
    for s in sessions:  # first run allocates buffers and picks kernels: do it before traffic
        s.run(None, warm)
    pool = SessionPool(sessions, settings.max_queue, settings.queue_timeout_s)
    batcher = (MicroBatcher(pool, settings.micro_batch, settings.micro_batch_wait_ms, settings.max_queue)
               if settings.micro_batch > 1 else None)
    log.info("loaded %s: %d session(s) x %d thread(s) on %s%s", manifest["id"], pool_size, threads,
             pool.providers, f", micro-batches of <= {settings.micro_batch}" if batcher else "")
    return LoadedModel(manifest["id"], manifest, pool, names, batcher)


def load_registry(settings: Settings) -> Registry:
    registry = Registry()
    manifests = sorted(Path(settings.model_dir).glob("*.json"))
    if not manifests:
        log.warning("no models found in %s", settings.model_dir)
    for orphan in sorted(Path(settings.model_dir).glob("*.onnx")):
        if not orphan.with_suffix(".json").exists():
            log.error("model %s unavailable: no manifest %s.json", orphan.stem, orphan.stem)
            registry.failed[orphan.stem] = f"no manifest {orphan.stem}.json"
    for path in manifests:
        try:
            model = load_model(path, settings)
            if model.id != path.stem:
                raise ModelLoadError(f"manifest id {model.id!r} != file name {path.stem!r}")
            registry.models[model.id] = model
        except ModelSkipped as exc:
            log.info("model %s skipped: %s", path.stem, exc)
            registry.skipped[path.stem] = str(exc)
        except ModelLoadError as exc:
            log.error("model %s unavailable: %s", path.stem, exc)
            registry.failed[path.stem] = str(exc)
    return registry
