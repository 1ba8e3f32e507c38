"""The profile's bookkeeping: every sample lands in exactly one category, and the
per-request arithmetic of the report."""
from __future__ import annotations

import collections

from benchmarks.profile import CATEGORIES, categorise, report

ORT = "Session.run (onnxruntime/capi/onnxruntime_inference_collection.py:401)"
MAIN = "thread (1): MainThread;Runner.run (asyncio/runners.py:118)"
ASGI = MAIN + ";RequestResponseCycle.run_asgi (uvicorn/protocols/http/httptools_impl.py:422)"


def test_samples_are_sorted_by_the_most_specific_frame():
    assert categorise(f"thread (2): ort_0;prepare_and_run (app/pool.py:38);{ORT}").startswith("onnxruntime")
    assert categorise("thread (2): ort_0;preprocess (app/pipeline.py:48);load_rgb (app/imaging.py:80)"
                      ).startswith("image decode")
    assert categorise("thread (2): ort_0;preprocess (app/pipeline.py:48);crop (models/transforms.py:9)"
                      ).startswith("crop and normalise")
    endpoint = ASGI + ";estimate_pose (app/routers/pose.py:50)"
    assert categorise(endpoint + ";json_response (app/routers/pose.py:35)").startswith("response")
    assert categorise(endpoint).startswith("endpoint code")
    assert categorise(endpoint + ";solve_dependencies (fastapi/dependencies/utils.py:671)"
                      ).startswith("FastAPI parameter")  # more specific than the endpoint
    assert categorise(ASGI + ";Request._get_form (starlette/requests.py:270)").startswith("multipart")
    assert categorise(ASGI + ";Router.__call__ (starlette/routing.py:683)").startswith("ASGI middleware")
    assert categorise(MAIN + ";_run_once (asyncio/base_events.py:1845)").startswith("uvicorn")
    assert categorise("thread (2): ort_0;_worker (concurrent/futures/thread.py:81)").startswith("worker-thread")


def test_report_turns_samples_into_cpu_ms_per_request():
    samples = collections.Counter({CATEGORIES[0][0]: 300, CATEGORIES[1][0]: 100})
    text = report(samples, requests=100, wall=0.005, rate=200, seconds=1, model="hourglass", image_bytes=1)
    # 300 samples at 200 Hz over 100 requests = 15 ms per request
    assert f"| {CATEGORIES[0][0]} | 300 | 15.00 | 75% |" in text
    assert "| **total** | 400 | 20.00 | 100% |" in text
