"""Schemathesis against the app's own OpenAPI schema: no input may produce a 5xx."""
from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

schemathesis = pytest.importorskip("schemathesis")

from app.main import create_app  # noqa: E402
from app.settings import Settings  # noqa: E402

pytestmark = pytest.mark.slow  # real servers / benchmarks / fuzzing: minutes, not seconds


@pytest.fixture(scope="module")
def fuzz_app(model_dir):
    app = create_app(Settings(model_dir=model_dir, pool_size=1, intra_op_threads=1,
                              max_upload_bytes=200_000, max_pixels=1_000_000))
    with TestClient(app):  # run the lifespan: models loaded
        yield app


schema = schemathesis.pytest.from_fixture("fuzz_schema")


@pytest.fixture(scope="module")
def fuzz_schema(fuzz_app):
    return schemathesis.openapi.from_asgi("/openapi.json", fuzz_app)


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_input_causes_a_server_error(case):
    response = case.call()
    not_a_server_error_status = response.status_code < 500
    assert not_a_server_error_status, (case.method, case.path, response.status_code, response.text[:300])
