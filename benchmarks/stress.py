"""``poseserve stress``: attack a loopback server with bursts, expensive images, stalled clients
and the costliest requests the API accepts, and measure.

Bounded in count and time, loopback only, stops by itself. Scenarios:

1. burst: N small requests released at once (each on its own connection); statuses + wall time.
2. expensive images: a 6324×6324 RGBA PNG (over the weighted decode budget) and
   the largest RGBA PNG under it; per request, the server's CPU seconds and RSS; then a
   normal request's latency while 8 of them hit ``/pose`` and 4 hit ``/pose/render``, and
   the server's RSS growth meanwhile.
3. stalled clients: the time after which a connection that stalls in its headers, or in
   its body, is cut off; and a normal request's latency while 50 such clients hang on.
4. memory: the worst requests the API accepts, one kind after another, on a crowded
   everyday photo (coco_dev's, from POSE_DATA_DIR; skipped without it): the server's RSS
   after each round and its peak, so growth after warm-up shows.
"""
from __future__ import annotations

import argparse
import datetime as dt
import io
import json
import os
import socket
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from benchmarks.bench import Server, multipart, rss_mb

SMALL_QUERY = "/pose?detect=false&heatmaps=none"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / 100  # utime + stime, in clock ticks (USER_HZ = 100)


def post(port: int, path: str, data: bytes, mime: str = "image/png", timeout: float = 120) -> tuple[int, float]:
    """One request on a fresh connection: (status or -1 on a transport error, seconds)."""
    import http.client

    body, ctype = multipart(data, "upload", mime)
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": ctype})
        r = conn.getresponse()
        r.read()
        return r.status, time.perf_counter() - start
    except OSError:
        return -1, time.perf_counter() - start
    finally:
        conn.close()


def small_jpeg() -> bytes:
    buf = io.BytesIO()
    img = Image.new("RGB", (96, 128), (90, 120, 150))
    ImageDraw.Draw(img).rectangle([30, 20, 66, 110], fill=(230, 200, 180))
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()


def small_person_jpeg() -> bytes:
    """A small real photo of a person when the datasets are at hand (so the detector finds
    someone and the pose model runs too), else the synthetic figure."""
    photo = Path(os.environ.get("POSE_DATA_DIR", "../shared/datasets")) / "lsp" / "images" / "im1001.jpg"
    return photo.read_bytes() if photo.exists() else small_jpeg()


def rgba_png(side: int) -> bytes:
    """A flat RGBA PNG with a figure: cheap to send (~100s of KB), costly to decode."""
    img = Image.new("RGBA", (side, side), (40, 60, 80, 255))
    ImageDraw.Draw(img).rectangle([side // 3, side // 6, 2 * side // 3, 5 * side // 6], fill=(220, 190, 170, 255))
    buf = io.BytesIO()
    img.save(buf, "PNG", compress_level=9)
    return buf.getvalue()


class RssSampler:
    """The server's RSS every 50 ms while in use: baseline (at start) and peak."""

    def __init__(self, pid: int) -> None:
        self.pid, self.samples, self._stop = pid, [rss_mb(pid)], threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            self.samples.append(rss_mb(self.pid))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    @property
    def growth_mb(self) -> float:
        return max(self.samples) - self.samples[0]


def burst(port: int, n: int, query: str = SMALL_QUERY, data: bytes | None = None) -> dict:
    data = data or small_jpeg()
    barrier = threading.Barrier(n)
    results: list[tuple[int, float]] = []
    lock = threading.Lock()

    def one() -> None:
        barrier.wait()
        r = post(port, query, data, "image/jpeg")
        with lock:
            results.append(r)

    threads = [threading.Thread(target=one) for _ in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    statuses = [s for s, _ in results]
    return {"requests": n, "query": query, "ok": statuses.count(200),
            "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
            "wall_s": round(time.perf_counter() - start, 2),
            "max_latency_s": round(max(t for _, t in results), 2)}


def expensive(port: int, pid: int, data: bytes, side: int) -> dict:
    """Per request cost, then a normal request's latency under 8 /pose + 4 /pose/render of it."""
    per = []
    for _ in range(3):
        c0 = cpu_seconds(pid)
        with RssSampler(pid) as rss:
            status, seconds = post(port, "/pose?heatmaps=none", data)
        per.append((status, seconds, cpu_seconds(pid) - c0, rss.growth_mb))
    normal = small_jpeg()
    attack_status: list[int] = []
    lock = threading.Lock()

    def attacker(path: str) -> None:
        status, _ = post(port, path, data)
        with lock:
            attack_status.append(status)

    attackers = ([threading.Thread(target=attacker, args=("/pose?heatmaps=none",)) for _ in range(8)]
                 + [threading.Thread(target=attacker, args=("/pose/render",)) for _ in range(4)])
    normal_lat = []
    with RssSampler(pid) as rss:
        for t in attackers:
            t.start()
        time.sleep(0.2)  # the attack is under way
        while any(t.is_alive() for t in attackers) or len(normal_lat) < 5:
            status, seconds = post(port, SMALL_QUERY, normal, "image/jpeg")
            normal_lat.append(seconds if status == 200 else float("inf"))
            time.sleep(0.1)
        for t in attackers:
            t.join()
    return {"image": f"{side}x{side} RGBA PNG, {len(data) / 1024:.0f} KB",
            "single_status": per[-1][0], "single_latency_s": round(float(np.median([p[1] for p in per])), 3),
            "cpu_s_per_request": round(float(np.median([p[2] for p in per])), 3),
            "rss_growth_per_request_mb": round(float(np.median([p[3] for p in per])), 1),
            "attack_statuses": {str(s): attack_status.count(s) for s in sorted(set(attack_status))},
            "normal_requests": len(normal_lat), "normal_p50_s": round(float(np.median(normal_lat)), 3),
            "normal_max_s": round(max(normal_lat), 3), "rss_growth_under_attack_mb": round(rss.growth_mb, 1)}


def stalled_cutoff(port: int, payload: bytes, limit_s: float = 60) -> dict:
    """Send ``payload`` and nothing more: when does the server answer and close?"""
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(payload)
        sock.settimeout(limit_s)
        start, answer = time.perf_counter(), b""
        try:
            while chunk := sock.recv(4096):
                answer += chunk
        except (TimeoutError, ConnectionResetError):
            pass
        return {"cut_off_after_s": round(time.perf_counter() - start, 2),
                "answer": answer.split(b"\r\n", 1)[0].decode("latin-1") or "(closed)"}


def stalled(port: int, hangers: int) -> dict:
    body, ctype = multipart(small_jpeg())
    head = (f"POST {SMALL_QUERY} HTTP/1.1\r\nHost: x\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    partial_headers = f"POST {SMALL_QUERY} HTTP/1.1\r\nHost: x\r\nContent-Type: multip".encode()
    socks = []
    for i in range(hangers):  # half stall in their headers, half in their bodies
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(partial_headers if i % 2 else head + body[: len(body) // 2])
        socks.append(s)
    try:
        lat = [post(port, SMALL_QUERY, small_jpeg(), "image/jpeg") for _ in range(5)]
    finally:
        for s in socks:
            s.close()
    return {"headers": stalled_cutoff(port, partial_headers),
            "body": stalled_cutoff(port, head + body[: len(body) // 2]),
            "hanging_clients": hangers,
            "normal_statuses_while_hanging": [s for s, _ in lat],
            "normal_p50_s_while_hanging": round(float(np.median([t for _, t in lat])), 3)}


CROWD_PHOTO = "coco_dev/images/000000005001.jpg"  # 13 annotated people, 640×480
MEMORY_CASES = (  # (label, path and query, concurrent requests)
    ("compare, every model", "/pose/compare?heatmaps=none", 1),
    ("compare, up to 50 people at score ≥ 0.05", "/pose/compare?heatmaps=none&max_persons=50&min_person_score=0.05", 1),
    ("pose, 50 people, heatmaps=array, stages=true",
     "/pose?heatmaps=array&stages=true&max_persons=50&min_person_score=0.05", 1),
    ("compare, 50 people, 4 at once", "/pose/compare?heatmaps=png&max_persons=50&min_person_score=0.05", 4),
)


def memory(port: int, pid: int, photo: bytes, rounds: int = 3) -> dict:
    """RSS after each round of each worst case (and the peak while it ran)."""
    cases = []
    start = rss_mb(pid)
    for label, path, concurrent in MEMORY_CASES:
        after, statuses = [], []
        with RssSampler(pid) as rss:
            for _ in range(rounds):
                threads = [threading.Thread(target=lambda: statuses.append(post(port, path, photo, "image/jpeg")[0]))
                           for _ in range(concurrent)]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                after.append(round(rss_mb(pid)))
        cases.append({"case": label, "statuses": {str(s): statuses.count(s) for s in sorted(set(statuses))},
                      "rss_after_each_round_mb": after, "peak_mb": round(max(rss.samples))})
    return {"photo": CROWD_PHOTO, "rss_at_start_mb": round(start), "cases": cases,
            "peak_mb": max(c["peak_mb"] for c in cases),
            "growth_after_first_round_mb": max(c["rss_after_each_round_mb"][-1] for c in cases)
            - cases[0]["rss_after_each_round_mb"][0]}


def markdown(r: dict, command: str) -> str:
    from app.settings import Settings  # the server's settings, as the environment sets them

    b, s = r["burst"], r["stalled"]
    d = r.get("burst_default_path")
    default_burst = "" if d is None else (
        f"\n\nThe same burst on the default path (`{d['query']}`: each request runs the detector, then "
        f"the pose model): **{d['ok']} of {d['requests']} answered 200** (statuses {d['statuses']}) in "
        f"{d['wall_s']} s, the slowest after {d['max_latency_s']} s.")
    mem = r.get("memory")
    memory_rows = "" if mem is None else "\n".join(
        f"| {c['case']} | {c['statuses']} | {' → '.join(str(v) for v in c['rss_after_each_round_mb'])} | {c['peak_mb']} |"
        for c in mem["cases"])
    memory_section = "" if mem is None else f"""
## Memory

The worst requests the API accepts, on a crowded everyday photo (`{mem['photo']}`, 13
annotated people), each case three rounds, one after another on the same server. RSS at
start {mem['rss_at_start_mb']} MB; **peak {mem['peak_mb']} MB**; RSS after the last round minus after
the first round of the first case: {mem['growth_after_first_round_mb']} MB.

| case | statuses | RSS after each round MB | peak MB |
|---|---|---|---|
{{memory_rows}}

What bounds it: onnxruntime's activations live in one arena for the whole process
(`POSE_CPU_ARENA=shared`), so what stays allocated is the most that ran at once, not a sum
over models and sessions, and a crowd runs in chunks of `POSE_MAX_BATCH` ({Settings().max_batch}) crops per run.
""".replace("{memory_rows}", memory_rows)
    rows = "\n".join(
        f"| {e['image']} | {e['single_status']} | {e['single_latency_s']} | {e['cpu_s_per_request']} | "
        f"{e['rss_growth_per_request_mb']} | {e['attack_statuses']} | {e['normal_p50_s']} / {e['normal_max_s']} "
        f"({e['normal_requests']} requests) | {e['rss_growth_under_attack_mb']} |" for e in r["expensive"])
    return f"""# Stress ({r['date']})

`{command}`: the shipped models, a real server on loopback with its default settings
(pool and threads derived from the 2-core quota), {r['machine']}.

## Burst

{b['requests']} small requests (96×128 JPEG, `detect=false`, `heatmaps=none`) released at
once, each on its own connection: **{b['ok']} of {b['requests']} answered 200**
(statuses {b['statuses']}), all done in {b['wall_s']} s, the slowest after {b['max_latency_s']} s.{default_burst}

## Expensive images

Per request: the server's CPU seconds and RSS growth for one `/pose` of the image. Under
attack: 8 concurrent `/pose` + 4 `/pose/render` of it, while a normal small request is
sent every 0.1 s; the normal request's p50 / max latency, and the server's RSS growth
(peak − before) over the whole attack. Goal: normal request under 2 s, RSS growth under 1 GB.

| image | status | latency s | CPU s / request | RSS growth / request MB | attack statuses | normal request p50 / max s | RSS growth under attack MB |
|---|---|---|---|---|---|---|---|
{rows}

The first image (40 M pixels of RGBA) weighs 53 M RGB-pixel equivalents against the
40 M budget (`POSE_MAX_PIXELS`, weighted by mode): refused from its header, before a
pixel is decoded. The second image is the largest RGBA square under the budget: it is
decoded once per request, in the decode pool (`POSE_DECODE_WORKERS` = 1), reduced to
`POSE_DECODE_MAX_SIDE` before its alpha is composited, and never on the event loop or in
an inference slot.

## Stalled clients

| stalls in | cut off after s | answer |
|---|---|---|
| headers (half a request line and header block) | {s['headers']['cut_off_after_s']} | `{s['headers']['answer']}` |
| body (headers and half the body sent) | {s['body']['cut_off_after_s']} | `{s['body']['answer']}` |

With {s['hanging_clients']} such clients hanging at once, normal requests were answered
{s['normal_statuses_while_hanging']} with p50 {s['normal_p50_s_while_hanging']} s. The deadlines are
`POSE_HEADER_TIMEOUT_S` and `POSE_READ_TIMEOUT_S` (10 s each); a body that keeps dripping is
cut at `POSE_BODY_TIMEOUT_S` (120 s; tested, not stressed here: it would take two minutes).
{memory_section}"""


def write(out: str, result: dict, args: argparse.Namespace) -> None:
    Path(out).write_text(markdown(result, "poseserve stress " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k in ("burst", "hangers"))
        + f" --out {out}"))
    Path(out).with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")


def main(args: argparse.Namespace) -> dict:
    server = Server(args.model_dir, threads=0, pool=0)
    try:
        pid, port = server.proc.pid, server.port
        result = {"date": dt.date.today().isoformat(), "machine": f"{len(__import__('os').sched_getaffinity(0))} cores",
                  "burst": burst(port, args.burst)}
        print(json.dumps(result["burst"]), flush=True)
        result["burst_default_path"] = burst(port, args.burst, "/pose?heatmaps=none", small_person_jpeg())
        print(json.dumps(result["burst_default_path"]), flush=True)
        budget_side = int((40_000_000 * 3 / 4) ** 0.5)  # the largest RGBA square under the default budget
        result["expensive"] = []
        for side in (6324, budget_side):
            result["expensive"].append(expensive(port, pid, rgba_png(side), side))
            print(json.dumps(result["expensive"][-1]), flush=True)
        result["stalled"] = stalled(port, args.hangers)
        print(json.dumps(result["stalled"]), flush=True)
        photo = Path(os.environ.get("POSE_DATA_DIR", "../shared/datasets")) / CROWD_PHOTO
        if photo.exists():
            result["memory"] = memory(port, pid, photo.read_bytes())
            print(json.dumps(result["memory"]), flush=True)
    finally:
        server.close()
    if args.out:
        write(args.out, result, args)
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model-dir", type=Path, default=Path("models/onnx"))
    p.add_argument("--burst", type=int, default=200, help="requests released at once")
    p.add_argument("--hangers", type=int, default=50, help="stalled clients held open at once")
    p.add_argument("--out", default="", help="markdown report (a .json beside it)")
