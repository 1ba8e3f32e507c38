"""``poseserve bench-arena``: where onnxruntime's activations live (``POSE_CPU_ARENA``),
measured on what it trades: a crowd's latency against the server's memory.

``off`` allocates every run's activations afresh and returns them, so a large batch pays
new pages each time; ``per-session`` keeps an arena per session (onnxruntime's default:
the sum over models and pool slots stays allocated); ``shared`` keeps one arena for the
process. Latency: one server per mode, all running, requests alternating between them in
interleaved blocks (whole photos of 1, 3, 6 and 8 people composed from one LSP photo, the
detector on), so every mode sees the same machine load. Memory: each mode's server alone
through ``poseserve stress``'s worst memory cases on a crowded photo, RSS peak and after.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import time
from pathlib import Path

from PIL import Image

from benchmarks.bench import Client, Server, rss_mb
from benchmarks.people import SINGLE, group_photo
from benchmarks.stress import CROWD_PHOTO, memory

MODES = ("off", "per-session", "shared")
PEOPLE = {1: (1, 1), 3: (3, 1), 6: (3, 2), 8: (4, 2)}  # people → (columns, rows)


def latencies(model_dir: Path, photos: dict[int, bytes], blocks: int, per_block: int) -> dict:
    servers = {mode: Server(model_dir, threads=0, pool=0, POSE_CPU_ARENA=mode) for mode in MODES}
    try:
        clients = {mode: Client(s.port) for mode, s in servers.items()}

        def request(mode: str, people: int) -> int:
            status, body = clients[mode].post_image("/pose?heatmaps=none", photos[people])
            if status != 200:
                raise RuntimeError(f"{mode}: /pose answered {status}")
            return len(json.loads(body)["persons"])

        found = {k: request("off", k) for k in photos}
        for mode in MODES:  # warm-up: every mode has run every batch size once
            for k in photos:
                request(mode, k)
        samples: dict[tuple[str, int], list[float]] = {(m, k): [] for m in MODES for k in photos}
        for _ in range(blocks):
            for mode in MODES:
                for k in photos:
                    for _ in range(per_block):
                        t = time.perf_counter()
                        request(mode, k)
                        samples[(mode, k)].append(time.perf_counter() - t)
        rss = {mode: round(rss_mb(s.proc.pid)) for mode, s in servers.items()}
    finally:
        for s in servers.values():
            s.close()
    p50 = {f"{m}/{k}": round(1e3 * statistics.median(v), 1) for (m, k), v in samples.items()}
    return {"found": found, "p50_ms": p50, "rss_after_mb": rss, "requests_each": blocks * per_block}


def memories(model_dir: Path, photo: bytes, rounds: int) -> dict:
    out = {}
    for mode in MODES:
        server = Server(model_dir, threads=0, pool=0, POSE_CPU_ARENA=mode)
        try:
            m = memory(server.port, server.proc.pid, photo, rounds)
        finally:
            server.close()
        out[mode] = {"start_mb": m["rss_at_start_mb"], "peak_mb": m["peak_mb"],
                     "after_last_mb": m["cases"][-1]["rss_after_each_round_mb"][-1],
                     "statuses": sorted({s for c in m["cases"] for s in c["statuses"]})}
    return out


def markdown(r: dict, command: str) -> str:
    lat, mem = r["latency"], r["memory"]
    people = sorted(lat["found"])
    rows = "\n".join(
        f"| `{m}` | " + " | ".join(str(lat["p50_ms"][f"{m}/{k}"]) for k in people)
        + f" | {lat['rss_after_mb'][m]} | {mem[m]['start_mb']} | **{mem[m]['peak_mb']}** | {mem[m]['after_last_mb']} |"
        for m in MODES)
    return f"""# Where activations live: `POSE_CPU_ARENA` ({r['date']})

`{command}` on {r['machine']}: the shipped models, the server's default pool and threads.

Latency: p50 ms of a whole-photo `/pose` (detector, then the default model on every person
found; `heatmaps=none`) on photos of {', '.join(str(k) for k in people)} people composed from one
LSP photo (found: {lat['found']}); one server per mode, running side by side, requests
alternating between them in interleaved blocks ({lat['requests_each']} per photo and mode).
Memory: each mode's server alone through `poseserve stress`'s worst memory cases on
`{CROWD_PHOTO}` ({r['rounds']} rounds each; statuses {sorted({s for m in MODES for s in mem[m]['statuses']})}).

| mode | {' | '.join(f'{k} people ms' for k in people)} | RSS after the latency runs MB | RSS at start MB | peak RSS, worst cases MB | RSS after them MB |
|---|{'---|' * len(people)}---|---|---|---|
{rows}

`off` returns every run's memory, so a large batch pays fresh, zeroed pages on each run;
the process's allocator keeps much of it anyway. An arena reuses warm memory; one arena
for the process (`shared`) holds the most that ran at once, where `per-session` keeps an
arena per session of every model.
"""


def main(args: argparse.Namespace) -> dict:
    root = Path(os.environ.get("POSE_DATA_DIR", "../shared/datasets"))
    if not (root / SINGLE).exists() or not (root / CROWD_PHOTO).exists():
        raise SystemExit(f"poseserve bench-arena: needs {root / SINGLE} and {root / CROWD_PHOTO} (POSE_DATA_DIR)")
    single = Image.open(root / SINGLE).convert("RGB")
    photos = {k: group_photo(single, k, layout) for k, layout in PEOPLE.items()}
    result = {"date": dt.date.today().isoformat(), "machine": f"{len(os.sched_getaffinity(0))} cores",
              "rounds": args.rounds, "latency": latencies(args.model_dir, photos, args.blocks, args.per_block)}
    print(json.dumps(result["latency"]), flush=True)
    result["memory"] = memories(args.model_dir, (root / CROWD_PHOTO).read_bytes(), args.rounds)
    print(json.dumps(result["memory"]), flush=True)
    if args.out:
        Path(args.out).write_text(markdown(result, f"poseserve bench-arena --out {args.out}"))
        Path(args.out).with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", type=Path, default=Path("models/onnx"))
    p.add_argument("--blocks", type=int, default=5, help="interleaved blocks")
    p.add_argument("--per-block", type=int, default=6, help="requests per photo, mode and block")
    p.add_argument("--rounds", type=int, default=2, help="rounds of each worst memory case")
    p.add_argument("--out", default="", help="markdown report (a .json beside it)")
