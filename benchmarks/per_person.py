"""Accuracy against per-person latency, every served model beside the MoveNet peer, for
``poseserve bench``.

Per person, bare onnxruntime on a session configured as the service's: the p50 of one
crop (batch 1) and, divided by the crowd, of the batch a crowded photo makes
(``--crowd`` crops, the service's default ``POSE_MAX_BATCH``); each again with the
test-time flip (the crops and their mirror images, as ``app.pipeline`` runs them). Every
latency is sampled in interleaved blocks, so all see the same machine load.

Accuracy is coco_dev PCK@0.2 over the 12 body joints: for our models the figure their
manifest records (measured by ``poseserve release`` through ``models.evaluate``, with
and without the flip); for MoveNet Lightning (``../shared/peers``, batch fixed at 1)
measured here by the same code. The peer skips cleanly where it is absent.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from models.evaluate import PEERS_DIR
from models.flip import with_mirrors

BLOCKS = 5


@dataclass
class Point:
    """One model (or variant) as the plot shows it."""

    id: str
    pck: float | None  # coco_dev PCK@0.2, 12 body joints
    pck_flip: float | None
    samples: dict[str, list[float]] = field(default_factory=dict)  # case → seconds per person

    def p50(self, case: str) -> float | None:
        return float(np.median(self.samples[case])) if self.samples.get(case) else None


def timing_cases(x1: np.ndarray, crowd: int, flip_inside: bool = False) -> dict[str, tuple[np.ndarray, int]]:
    """case → (the batch one run takes, the people it answers): one crop and a crowd, each
    plain and with the mirror images appended (a graph with the flip inside mirrors itself)."""
    xs = np.repeat(x1, crowd, axis=0)
    if flip_inside:
        return {"batch 1 + flip": (x1, 1), f"batch {crowd} + flip": (xs, crowd)}
    return {"batch 1": (x1, 1), f"batch {crowd}": (xs, crowd),
            "batch 1 + flip": (with_mirrors(x1), 1), f"batch {crowd} + flip": (with_mirrors(xs), crowd)}


def _timed_per_person(run, people: int, n: int) -> list[float]:
    from benchmarks.bench import timed

    return [t / people for t in timed(run, n)]


def measure(model_dir: Path, threads: int, n: int, crowd: int, data: str | None) -> list[Point]:
    from app.registry import ModelLoadError, ModelSkipped, load_model
    from app.settings import Settings

    settings = Settings(model_dir=model_dir, pool_size=1, intra_op_threads=threads, device="cpu")
    runs: list[tuple[Point, dict]] = []
    loaded = []
    for path in sorted(model_dir.glob("*.json")):
        try:
            m = load_model(path, settings)
        except (ModelSkipped, ModelLoadError):  # the detector, a CUDA-only variant
            continue
        loaded.append(m)
        acc = m.manifest.accuracy or {}
        flip_acc = acc.get("flip_test", {}).get("coco_dev_pck@0.2")
        plain = acc.get("coco_dev", {}).get("pck@0.2")
        if m.manifest.flip_test:  # a graph with the flip inside: its only numbers are flipped ones
            plain, flip_acc = None, plain
        session, size = m.pool.sessions[0], m.input_size
        x1 = np.random.default_rng(0).normal(size=(1, 3, size, size)).astype(np.float32)
        cases = timing_cases(x1, crowd, m.manifest.flip_test)
        runs.append((Point(m.id, plain, flip_acc),
                     {case: (lambda s=session, x=x: s.run(None, {"image": x}), people)
                      for case, (x, people) in cases.items()}))
    peer = _peer(threads, data)
    if peer is not None:
        runs.append(peer)
    for _ in range(BLOCKS):
        for point, cases in runs:
            for case, (run, people) in cases.items():
                point.samples.setdefault(case, []).extend(_timed_per_person(run, people, max(1, n // BLOCKS)))
    for m in loaded:
        m.pool.close()
    return [p for p, _ in runs]


def _peer(threads: int, data: str | None) -> tuple[Point, dict] | None:
    """MoveNet Lightning, batch fixed at 1: a crowd costs one run per person."""
    from models.evaluate import evaluate_coco, movenet_runner
    from models.runtime import create_session

    path = PEERS_DIR / "movenet_lightning.onnx"
    if not path.exists():
        return None
    try:
        pck = evaluate_coco("movenet-lightning", data=data, runner=movenet_runner(path))["pck@0.2"]
    except FileNotFoundError:  # no coco_dev: latency only
        pck = None
    session = create_session(path, threads)
    spec = session.get_inputs()[0]
    dtype = np.uint8 if "uint8" in spec.type else np.int32
    x = np.zeros([d if isinstance(d, int) else 1 for d in spec.shape], dtype)
    run = lambda: session.run(None, {spec.name: x})  # noqa: E731
    return Point("movenet-lightning (peer)", pck, None), {"batch 1": (run, 1)}


def plot(points: list[Point], out: Path) -> bool:
    """coco_dev PCK@0.2 against per-person latency at batch 1; False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for p in points:
        for case, pck, marker in (("batch 1", p.pck, "o"), ("batch 1 + flip", p.pck_flip, "^")):
            t = p.p50(case)
            if t is None or pck is None:
                continue
            peer = "peer" in p.id
            ax.scatter(t * 1e3, pck, marker="*" if peer else marker, s=140 if peer else 40,
                       color="black" if peer else None)
            ax.annotate(p.id + (" + flip" if "flip" in case else ""), (t * 1e3, pck), fontsize=7,
                        xytext=(4, 3), textcoords="offset points")
    ax.set(xlabel="ms per person (bare onnxruntime, batch 1, p50)", ylabel="coco_dev PCK@0.2 (12 body joints)",
           title="Accuracy against latency (○ plain, △ flip test, ★ peer)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return True


def section(model_dir: Path, threads: int, n: int, data: str | None, plot_path: Path,
            crowd: int | None = None) -> list[str]:
    """``crowd``: the people of a crowded photo's batch; the service's POSE_MAX_BATCH (as the
    environment sets it, like the servers the other sections start)."""
    from app.settings import Settings
    from benchmarks.bench import ms, table

    crowd = crowd or Settings().max_batch

    points = measure(model_dir, threads, n, crowd, data)
    cases = ["batch 1", "batch 1 + flip", f"batch {crowd}", f"batch {crowd} + flip"]

    def cell(v: float | None, fmt=lambda v: f"{v:.3f}") -> str:
        return "–" if v is None else fmt(v)

    rows = [[p.id, cell(p.pck), cell(p.pck_flip), *(cell(p.p50(c), ms) for c in cases)] for p in points]
    lines = ["", "## Accuracy against latency per person", "",
             f"Bare onnxruntime, {threads} intra-op thread(s), session options as the service's; p50 ms per "
             f"person over {n} runs, sampled in {BLOCKS} interleaved blocks; *batch {crowd}*: a crowded photo's "
             f"batch (the service's POSE_MAX_BATCH) divided by its {crowd} people; *+ flip*: each crop with its "
             "mirror image (`flip=true`). coco_dev PCK@0.2: our models' as their manifests record it "
             "(`poseserve release`); the peer's measured in this run by the same code. The peer's graph takes "
             "one crop per run.", ""]
    lines += table(["model", "coco_dev PCK@0.2", "+ flip", *(f"ms/person {c}" for c in cases)], rows)
    if plot(points, plot_path):
        lines += ["", f"![accuracy against latency]({plot_path.name})"]
    return lines + [""]
