"""Loading models from the model directory: manifest checks, sessions, warm-up.

Policy on startup faults (documented in the README): a model whose ONNX file is
missing, corrupt, fails its sha256, or whose graph does not match its manifest is
*not served*: it is logged, listed with its error under ``/models`` → ``unavailable``
and in ``/readyz`` (which then answers 503), and requests for it get 503. The other
models serve normally. No half-loaded model is ever reachable.

The person detector (manifest ``kind: detector``) is loaded the same way into its own
session pool and held as ``Registry.detector``; it counts for readiness like a model.

A model whose manifest names a ``requires_provider`` that this server does not run
(the fp16 variants: CUDA only) is *skipped*, not failed: it is listed under
``/models`` → ``skipped`` with the reason, requests for it get 404 saying why, and
readiness is unaffected — the same model directory serves a CPU and a GPU host.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from pydantic import ValidationError

from app.batching import MicroBatcher
from app.pool import SessionPool
from app.settings import Settings
from models.keypoints import coco_indices
from models.manifest import Artifact, DetectorManifest, PoseManifest, load_manifest, sha256_file
from models.runtime import choose_providers, create_session

log = logging.getLogger("poseserve.registry")
# The int8 variant becomes the CPU default only when it costs at most half a point of PCK.
DEFAULT_INT8_MAX_DROP = 0.005


class ModelLoadError(Exception):
    pass


class StartupError(RuntimeError):
    """Nothing to serve: the server must not start (and pass its health checks) empty."""


class ModelSkipped(Exception):
    """A sound model this server does not serve (it needs a provider we do not run)."""


@dataclass
class LoadedModel:
    id: str
    manifest: PoseManifest
    pool: SessionPool
    output_names: list[str]
    batcher: MicroBatcher | None = None

    @property
    def runner(self) -> SessionPool | MicroBatcher:
        """What requests go through: the micro-batcher when enabled, else the pool."""
        return self.batcher or self.pool

    @property
    def input_size(self) -> int:
        return self.manifest.input.size

    @cached_property
    def coco_order(self) -> list[int | None]:
        """For each COCO-17 joint, its keypoint id in this model (None: not predicted)."""
        return coco_indices(self.manifest.keypoints)


@dataclass
class LoadedDetector:
    """The person detector: its manifest and session pool (batch fixed at 1)."""

    id: str
    manifest: DetectorManifest
    pool: SessionPool

    @property
    def input_size(self) -> int:
        return int(self.manifest.input["size"])


@dataclass
class Registry:
    models: dict[str, LoadedModel] = field(default_factory=dict)
    detector: LoadedDetector | None = None
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def loaded(self) -> dict[str, list[str]]:
        """Every loaded graph (pose models and the detector) → the providers it runs on."""
        graphs = {k: v.pool.providers for k, v in self.models.items()}
        if self.detector is not None:
            graphs[self.detector.id] = self.detector.pool.providers
        return graphs

    def default_for(self, name: str) -> str:
        """The model a request that names none gets: ``name`` (``POSE_DEFAULT_MODEL``), or
        its int8 variant on a CPU server when that variant is faster and its measured LSP
        PCK@0.2 drop is at most ``DEFAULT_INT8_MAX_DROP`` (``name`` ``auto`` = hourglass)."""
        if name != "auto":
            return name
        plain = [m.id for m in self.models.values() if m.manifest.variant is None]
        base = "hourglass" if "hourglass" in plain or not plain else plain[0]
        int8 = self.models.get(f"{base}-int8")
        on_cpu = base in self.models and self.models[base].pool.providers[0] == "CPUExecutionProvider"
        decision = int8.manifest.int8_decision if int8 else None
        if on_cpu and decision and decision["pck_drop"] <= DEFAULT_INT8_MAX_DROP and \
                decision["p50_ms_int8"] < decision["p50_ms_fp32"]:
            return f"{base}-int8"
        return base

    def compared(self, ids: str | None) -> list[LoadedModel]:
        """The models ``/pose/compare`` runs: ``ids`` (comma-separated) in that order, or by
        default the full-precision model of each architecture (variants only when named).
        Raises ``KeyError`` naming the first id not served here."""
        if not ids:
            return [m for m in self.models.values() if m.manifest.variant is None]
        chosen = list(dict.fromkeys(i.strip() for i in ids.split(",") if i.strip()))
        for i in chosen:
            if i not in self.models:
                raise KeyError(i)
        return [self.models[i] for i in chosen]

    def close(self) -> None:
        for m in self.models.values():
            m.runner.close()
        if self.detector is not None:
            self.detector.pool.close()


def validation_summary(exc: ValidationError) -> str:
    """The first few schema errors as 'field: message', with no input values or paths."""
    parts = [f"{'.'.join(str(p) for p in e['loc']) or 'manifest'}: {e['msg']}" for e in exc.errors()[:3]]
    return "invalid manifest: " + "; ".join(parts)


def verify(manifest_path: Path, settings: Settings) -> tuple[Artifact, Path, list[str]]:
    """Schema, file, checksum and provider checks of any manifest: (manifest, graph, providers)."""
    try:
        manifest = load_manifest(manifest_path)
    except OSError:
        raise ModelLoadError("unreadable manifest") from None
    except ValidationError as exc:
        raise ModelLoadError(validation_summary(exc)) from None
    if manifest.id != manifest_path.stem:
        raise ModelLoadError(f"manifest id {manifest.id!r} != file name {manifest_path.stem!r}")
    onnx_path = manifest.onnx_path(manifest_path)
    if not onnx_path.is_file():
        raise ModelLoadError(f"missing ONNX file {manifest.onnx}")
    if sha256_file(onnx_path) != manifest.sha256:
        raise ModelLoadError(f"{manifest.onnx} does not match the sha256 in its manifest")
    providers = choose_providers(settings.device)
    if manifest.requires_provider and manifest.requires_provider not in providers:
        raise ModelSkipped(f"{getattr(manifest, 'variant', None) or 'this'} variant is served only with "
                           f"{manifest.requires_provider}; this server runs {providers}")
    return manifest, onnx_path, providers


def open_sessions(manifest: Artifact, onnx_path: Path, providers: list[str], settings: Settings) -> list:
    pool_size, threads = settings.threads_and_pool()
    try:
        sessions = [create_session(onnx_path, threads, providers, settings.cpu_arena) for _ in range(pool_size)]
    except Exception as exc:  # onnxruntime raises its own exception types for bad graphs
        log.error("onnxruntime could not load %s: %s", onnx_path, exc)
        raise ModelLoadError(f"onnxruntime could not load {manifest.onnx}") from None
    log.info("loading %s: %d session(s) x %d thread(s) on %s", manifest.id, pool_size, threads,
             sessions[0].get_providers())
    return sessions


def make_pool(sessions: list, warm: dict[str, np.ndarray], settings: Settings) -> SessionPool:
    """Warm every session up (the first run allocates buffers and picks kernels: do it before
    traffic) and seed the pool's run-time estimate, which admission decisions start from."""
    for s in sessions:
        s.run(None, warm)
    start = time.perf_counter()
    sessions[0].run(None, warm)
    return SessionPool(sessions, settings.queue_timeout_s, settings.max_queue, time.perf_counter() - start)


def load_detector(manifest: DetectorManifest, onnx_path: Path, providers: list[str],
                  settings: Settings) -> LoadedDetector:
    sessions = open_sessions(manifest, onnx_path, providers, settings)
    size = int(manifest.input["size"])
    inputs = sessions[0].get_inputs()
    if len(inputs) != 1 or list(inputs[0].shape[1:]) != [3, size, size]:
        raise ModelLoadError(f"detector input {[i.shape for i in inputs]} != manifest [1, 3, {size}, {size}]")
    warm = {inputs[0].name: np.zeros((1, 3, size, size), np.float32)}
    return LoadedDetector(manifest.id, manifest, make_pool(sessions, warm, settings))


def load_model(manifest_path: Path, settings: Settings) -> LoadedModel:
    """Verify one pose manifest + graph and open its session pool, warmed up."""
    manifest, onnx_path, providers = verify(manifest_path, settings)
    if not isinstance(manifest, PoseManifest):
        raise ModelLoadError(f"a {manifest.kind} manifest where a pose model was expected")
    return load_pose_model(manifest, onnx_path, providers, settings)


def load_pose_model(manifest: PoseManifest, onnx_path: Path, providers: list[str],
                    settings: Settings) -> LoadedModel:
    sessions = open_sessions(manifest, onnx_path, providers, settings)
    size = manifest.input.size
    inputs = sessions[0].get_inputs()
    if len(inputs) != 1 or list(inputs[0].shape[1:]) != [3, size, size]:
        raise ModelLoadError(f"graph input {[i.shape for i in inputs]} != manifest [N, 3, {size}, {size}]")
    names = [o.name for o in sessions[0].get_outputs()]
    if set(names) != set(manifest.outputs):
        raise ModelLoadError(f"graph outputs {names} != manifest outputs {list(manifest.outputs)}")
    pool = make_pool(sessions, {inputs[0].name: np.zeros((1, 3, size, size), np.float32)}, settings)
    batcher = (MicroBatcher(pool, settings.micro_batch, settings.micro_batch_wait_ms)
               if settings.micro_batch > 1 else None)
    if batcher:
        log.info("%s: micro-batches of <= %d", manifest.id, settings.micro_batch)
    return LoadedModel(manifest.id, manifest, pool, names, batcher)


def load_registry(settings: Settings) -> Registry:
    """Load every model of the model directory; each fault costs that model alone.

    A missing directory, or one with no servable pose model, stops startup (``StartupError``)
    unless ``allow_empty_model_dir``: an empty server would pass liveness checks and then
    answer every request with an error that blames the client.
    """
    registry = Registry()
    model_dir = Path(settings.model_dir)
    if not model_dir.is_dir():
        return _empty(registry, f"model directory {model_dir} does not exist", settings)
    for orphan in sorted(model_dir.glob("*.onnx")):
        if not orphan.with_suffix(".json").exists():
            log.error("model %s unavailable: no manifest %s.json", orphan.stem, orphan.stem)
            registry.failed[orphan.stem] = f"no manifest {orphan.stem}.json"
    for path in sorted(model_dir.glob("*.json")):
        try:
            manifest, onnx_path, providers = verify(path, settings)
            if isinstance(manifest, DetectorManifest):
                if registry.detector is not None:
                    raise ModelLoadError(f"a second detector; {registry.detector.id!r} is already loaded")
                registry.detector = load_detector(manifest, onnx_path, providers, settings)
            else:
                registry.models[manifest.id] = load_pose_model(manifest, onnx_path, providers, settings)
        except ModelSkipped as exc:
            log.info("model %s skipped: %s", path.stem, exc)
            registry.skipped[path.stem] = str(exc)
        except ModelLoadError as exc:
            log.error("model %s unavailable: %s", path.stem, exc)
            registry.failed[path.stem] = str(exc)
    if not registry.models:
        failed = f" ({len(registry.failed)} failed to load, see above)" if registry.failed else ""
        return _empty(registry, f"no servable pose model in {model_dir}{failed}", settings)
    return registry


def _empty(registry: Registry, problem: str, settings: Settings) -> Registry:
    if not settings.allow_empty_model_dir:
        log.error("%s: not starting. Point POSE_MODEL_DIR at a model directory "
                  "(POSE_ALLOW_EMPTY_MODEL_DIR=true starts empty, for development)", problem)
        registry.close()
        raise StartupError(problem)
    log.warning("%s: starting anyway (POSE_ALLOW_EMPTY_MODEL_DIR)", problem)
    return registry
