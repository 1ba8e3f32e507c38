"""Admission before the body is read, and the deadlines on slow clients."""
from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time

import pytest

from app.admission import runners_for
from tests.helpers import image_bytes

BOUNDARY = b"x"
PART_HEAD = (b"--x\r\nContent-Disposition: form-data; name=\"image\"; filename=\"a.jpg\"\r\n"
             b"Content-Type: image/jpeg\r\n\r\n")


def scope(path: str, query: bytes = b"") -> dict:
    return {"type": "http", "method": "POST", "path": path, "query_string": query, "root_path": "",
            "headers": [(b"content-type", b"multipart/form-data; boundary=x")], "http_version": "1.1",
            "scheme": "http", "server": ("test", 80), "client": ("client", 1)}


async def call(app, scope_: dict, messages: list[dict]) -> tuple[list[dict], bool]:
    """Run one request through the ASGI app; returns (sent messages, whether the body was read)."""
    read = [False]

    async def receive():
        read[0] = True
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)  # a client that never sends the rest

    sent: list[dict] = []

    async def send(message):
        sent.append(message)

    await app(scope_, receive, send)
    return sent, read[0]


@pytest.fixture
def app_with(model_dir):
    from app.main import create_app
    from app.settings import Settings

    def make(**overrides):
        return create_app(Settings(model_dir=model_dir, pool_size=1, intra_op_threads=1, **overrides))

    return make


def test_the_pools_a_request_needs_are_known_from_its_query(client):
    reg, settings = client.app.state.registry, client.app.state.settings
    ids = lambda path, q: [g for g, _ in runners_for(reg, settings, path, q)]  # noqa: E731
    assert ids("/pose", b"") == [reg.default_for(settings.default_model), "person_detector"]
    assert ids("/pose", b"model=cpm&detect=false") == ["cpm"]
    assert ids("/pose/render", b"model=cpm&bbox=1,2,30,40") == ["cpm"]
    assert ids("/pose", b"model=nope") == ["person_detector"]  # the 404 is the endpoint's to give
    assert set(ids("/pose/compare", b"detect=0")) == set(reg.models)


def test_an_overloaded_model_is_refused_before_the_body_is_read(app_with):
    async def scenario():
        app = app_with()
        async with app.router.lifespan_context(app):
            pool = app.state.registry.models["cpm"].pool
            pool.run_s = 60.0  # one run ahead would take a minute: over the 10 s limit
            pool._idle.get_nowait()  # the only session is busy
            sent, read = await call(app, scope("/pose", b"model=cpm&detect=false"),
                                    [{"type": "http.request", "body": PART_HEAD, "more_body": True}])
            other, _ = await call(app, scope("/pose", b"model=tompson&detect=false"),
                                  [{"type": "http.request", "body": b"--x--\r\n"}])
            metrics = app.state.metrics.rejected.labels("cpm", "busy")._value.get()
        return sent, read, other, metrics

    sent, read, other, rejected = asyncio.run(scenario())
    start = sent[0]
    headers = dict(start["headers"])
    assert start["status"] == 503 and not read, "refused without reading a byte of the body"
    assert headers[b"retry-after"] == b"50" and headers[b"connection"] == b"close"
    assert other[0]["status"] == 422, "another model's requests still go through (to validation here)"
    assert rejected == 1


def test_a_stalled_upload_is_answered_408_after_the_read_timeout(app_with):
    async def scenario():
        app = app_with(read_timeout_s=0.3)
        async with app.router.lifespan_context(app):
            start = time.monotonic()
            sent, _ = await call(app, scope("/pose", b"detect=false"),
                                 [{"type": "http.request", "body": PART_HEAD + b"abc", "more_body": True}])
            return sent, time.monotonic() - start

    sent, elapsed = asyncio.run(scenario())
    assert sent[0]["status"] == 408 and dict(sent[0]["headers"])[b"connection"] == b"close"
    assert 0.25 < elapsed < 2


def test_a_dripping_upload_is_cut_off_at_the_body_deadline(app_with):
    async def scenario():
        app = app_with(read_timeout_s=0.3, body_timeout_s=0.6)
        async with app.router.lifespan_context(app):
            async def drip():
                await asyncio.sleep(0.2)  # always under the read timeout
                return {"type": "http.request", "body": b"a", "more_body": True}

            sent: list[dict] = []
            first = [True]

            async def receive():
                if first[0]:
                    first[0] = False
                    return {"type": "http.request", "body": PART_HEAD, "more_body": True}
                return await drip()

            async def send(m):
                sent.append(m)

            start = time.monotonic()
            await app(scope("/pose", b"detect=false"), receive, send)
            return sent, time.monotonic() - start

    sent, elapsed = asyncio.run(scenario())
    assert sent[0]["status"] == 408 and 0.5 < elapsed < 2


@contextlib.contextmanager
def live_server(model_dir, **overrides):
    """The real uvicorn server as ``poseserve serve`` configures it, on a free loopback port."""
    import argparse

    import uvicorn

    from app.main import create_app
    from app.serve import uvicorn_options
    from app.settings import Settings

    settings = Settings(model_dir=model_dir, pool_size=1, intra_op_threads=1, **overrides)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    options = uvicorn_options(argparse.Namespace(host="127.0.0.1", port=port, graceful_timeout=1), settings)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), **options, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(400):
        if server.started:
            break
        time.sleep(0.05)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(10)


def read_all(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except socket.timeout:
        pass
    return data


def test_a_client_stalling_in_its_headers_is_answered_408_and_disconnected(model_dir):
    with live_server(model_dir, header_timeout_s=0.5) as port, socket.create_connection(("127.0.0.1", port)) as sock:
        start = time.monotonic()
        sock.sendall(b"POST /pose HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/")  # ... and nothing more
        answer = read_all(sock, 5)
        elapsed = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408") and b"headers not received in time" in answer
    assert 0.4 < elapsed < 3, "cut off at the header deadline, and the connection closed"


def test_connections_beyond_the_cap_get_503(model_dir):
    with live_server(model_dir, max_connections=4) as port:
        check_connection_cap(port, 4)


def check_connection_cap(port: int, cap: int) -> None:
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(cap)]
    try:
        time.sleep(0.1)
        with socket.create_connection(("127.0.0.1", port)) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_all(sock, 3).startswith(b"HTTP/1.1 503")
    finally:
        for s in idle:
            s.close()
    time.sleep(0.2)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        assert read_all(sock, 3).startswith(b"HTTP/1.1 200")


def test_a_burst_of_200_small_requests_is_served_whole(model_dir):
    """The burst that a count cap of 16 answered with 158 503s: every request gets a 200."""
    import httpx2

    data = image_bytes("JPEG", (64, 80))

    async def burst(port: int):
        limits = httpx2.Limits(max_connections=200)
        async with httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", limits=limits,
                                     timeout=60) as c:
            async def one():
                return (await c.post("/pose?detect=false&heatmaps=none",
                                     files={"image": ("a.jpg", data, "image/jpeg")})).status_code
            return await asyncio.gather(*(one() for _ in range(200)))

    with live_server(model_dir) as port:
        codes = asyncio.run(burst(port))
    assert codes.count(200) == 200, {c: codes.count(c) for c in set(codes)}
