"""Micro-batching: concurrent requests share one batched run and get their own rows back."""
from __future__ import annotations

import asyncio

import numpy as np
from fastapi.testclient import TestClient

from app.batching import MicroBatcher
from app.pool import SessionPool
from tests.helpers import image_bytes


class RecordingSession:
    """Returns each row's own sum, and records the batch sizes it was called with."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def run(self, names, feeds):
        x = feeds["image"]
        self.batches.append(len(x))
        return [x.reshape(len(x), -1).sum(1, keepdims=True)]

    def get_providers(self):
        return ["CPUExecutionProvider"]


def test_concurrent_requests_are_batched_and_split_back():
    async def scenario():
        session = RecordingSession()
        batcher = MicroBatcher(SessionPool([session], queue_timeout_s=5), max_batch=8, max_wait_ms=50)
        xs = [np.full((1, 2), float(i), np.float32) for i in range(6)]
        results = await asyncio.gather(*(batcher.run({"image": x}, 5) for x in xs))
        for i, result in enumerate(results):
            assert result.outputs[0].shape == (1, 1) and result.outputs[0][0, 0] == 2.0 * i
        assert session.batches == [6]
        batcher.close()

    asyncio.run(scenario())


def test_feeds_made_by_a_function_join_the_batch_too():
    async def scenario():
        session = RecordingSession()
        batcher = MicroBatcher(SessionPool([session], queue_timeout_s=5), max_batch=8, max_wait_ms=50)
        results = await asyncio.gather(*(batcher.run(lambda i=i: {"image": np.full((1, 2), float(i), np.float32)}, 5)
                                         for i in range(3)))
        assert [r.outputs[0][0, 0] for r in results] == [0.0, 2.0, 4.0]
        assert session.batches == [3] and all(r.prepare_s >= 0 for r in results)
        batcher.close()

    asyncio.run(scenario())


def test_batch_size_is_capped():
    async def scenario():
        session = RecordingSession()
        batcher = MicroBatcher(SessionPool([session], queue_timeout_s=5), max_batch=4, max_wait_ms=50)
        await asyncio.gather(*(batcher.run({"image": np.zeros((1, 2), np.float32)}, 5) for _ in range(10)))
        assert max(session.batches) <= 4 and sum(session.batches) == 10
        batcher.close()

    asyncio.run(scenario())


def test_service_answers_the_same_with_micro_batching(model_dir):
    from app.main import create_app
    from app.settings import Settings

    data = image_bytes("PNG")
    files = {"image": ("p.png", data, "image/png")}
    answers = []
    for micro_batch in (0, 4):
        settings = Settings(model_dir=model_dir, pool_size=1, intra_op_threads=1, micro_batch=micro_batch)
        with TestClient(create_app(settings)) as c:
            assert (c.app.state.registry.models["cpm"].batcher is None) == (micro_batch == 0)
            r = c.post("/pose?model=cpm&heatmaps=array&detect=false", files=files)
            assert r.status_code == 200
            answers.append(r.json())
    assert answers[0]["keypoints"] == answers[1]["keypoints"]
    np.testing.assert_allclose(answers[0]["heatmaps"]["maps"], answers[1]["heatmaps"]["maps"], atol=1e-4)
