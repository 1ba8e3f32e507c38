"""Decode cost is bounded by what the models need: weighted budget, bounded size, one
decode per non-JPEG upload, large decodes in their own small pool, capped renders."""
from __future__ import annotations

import asyncio
import io
import logging
import threading

import numpy as np
import pytest
from PIL import Image

from app.imaging import ImageError, decode_image, decode_weight, open_image
from app.uploads import DecodePool, Upload
from tests.helpers import image_bytes


def png(size: tuple[int, int], mode: str = "RGB", **save) -> bytes:
    """A flat image: cheap to send however large, like the attack images."""
    buf = io.BytesIO()
    Image.new(mode, size).save(buf, "PNG", **save)
    return buf.getvalue()


def png48(size: tuple[int, int]) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one, so the chunks are built here)."""
    import struct
    import zlib

    w, h = size
    raw = b"".join(b"\0" + b"\0" * (w * 6) for _ in range(h))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("data,weight", [(png((8, 8)), 1.0), (png((8, 8), "RGBA"), 4 / 3),
                                         (png((8, 8), "L"), 1 / 3), (png((8, 8), "P"), 4 / 3),
                                         (png48((8, 8)), 2.0)])
def test_decode_weight_counts_bytes_per_pixel_relative_to_rgb(data, weight):
    assert decode_weight(open_image(data, 10**6)) == pytest.approx(weight)


def test_the_pixel_budget_is_weighted_by_mode():
    """Same pixel count, under the budget as RGB, over it as RGBA or 48-bit RGB."""
    budget = 300 * 300
    assert open_image(png((300, 300)), budget).size == (300, 300)
    for data in (png((300, 300), "RGBA"), png48((300, 300))):
        with pytest.raises(ImageError) as err:
            open_image(data, budget)
        assert err.value.status == 413 and "RGBA and 16-bit" in err.value.detail


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP"])
def test_decodes_are_bounded_on_the_long_side(fmt):
    """At most max_side, and not much less: an integer reduce alone would give 1000 / 4 = 250
    for 256 (and 3000 / 2 = 1500 for 2048)."""
    img = decode_image(image_bytes(fmt, (1000, 400)), 10**7, max_side=256)
    assert max(img.size) == 256 and img.mode == "RGB"
    assert abs(img.size[0] / img.size[1] - 2.5) < 0.05  # aspect kept


def test_a_large_rgba_png_is_reduced_before_it_is_converted(monkeypatch):
    """Compositing RGBA onto RGB at full size is what made a 40 MP PNG cost 650 MB."""
    import app.imaging as imaging

    sizes = []
    real = imaging._to_rgb
    monkeypatch.setattr(imaging, "_to_rgb", lambda img: sizes.append(img.size) or real(img))
    img = decode_image(png((2000, 1000), "RGBA"), 10**7, max_side=500)
    assert img.size == (500, 250) and sizes == [(500, 250)]


def test_a_non_jpeg_upload_decodes_once_a_jpeg_per_use(monkeypatch):
    import app.uploads as uploads

    calls = []
    real = uploads.load_rgb
    monkeypatch.setattr(uploads, "load_rgb", lambda *a, **k: calls.append(1) or real(*a, **k))
    for fmt, expected in (("PNG", 1), ("JPEG", 3)):
        calls.clear()
        upload = Upload(image_bytes(fmt, (300, 200)), 10**6, 2048, 10**6)
        for reduction in (1.0, 2.0, 4.0):  # detector, pose crops, render
            assert upload.rgb(reduction)[0].mode == "RGB"
        assert len(calls) == expected, fmt


def test_large_decodes_run_in_the_bounded_pool_one_at_a_time(monkeypatch):
    import app.uploads as uploads

    active, peak, threads = [0], [0], set()
    lock = threading.Lock()
    real = uploads.load_rgb

    def spy(*a, **k):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            threads.add(threading.current_thread().name)
        try:
            threading.Event().wait(0.05)
            return real(*a, **k)
        finally:
            with lock:
                active[0] -= 1

    monkeypatch.setattr(uploads, "load_rgb", spy)

    async def scenario():
        pool = DecodePool(workers=1, timeout_s=5)
        large = [Upload(png((600, 600)), 10**7, 2048, large_pixels=100_000) for _ in range(4)]
        small = Upload(png((100, 100)), 10**7, 2048, large_pixels=100_000)
        await asyncio.gather(*(pool.prepare(u) for u in [*large, small]))
        pool.close()
        return large, small

    large, small = asyncio.run(scenario())
    assert all(u.large and u.decoded for u in large) and not small.large and not small.decoded
    assert peak[0] == 1 and all(t.startswith("decode") for t in threads)


def test_a_request_waiting_too_long_for_a_decoder_is_refused_as_busy():
    from app.pool import Overloaded

    async def scenario():
        pool = DecodePool(workers=1, timeout_s=0.05)
        gate = threading.Event()

        class Stuck(Upload):
            def rgb(self, max_reduction: float = 1.0):
                gate.wait(5)
                return super().rgb(max_reduction)

        first = Stuck(png((600, 600)), 10**7, 2048, 1000)
        running = asyncio.create_task(pool.prepare(first))
        await asyncio.sleep(0.02)
        with pytest.raises(Overloaded):
            await pool.prepare(Upload(png((600, 600)), 10**7, 2048, 1000))
        gate.set()
        await running
        pool.close()

    asyncio.run(scenario())


def test_render_output_is_capped_and_drawn_at_the_right_place(model_dir):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    settings = Settings(model_dir=model_dir, pool_size=1, intra_op_threads=1, render_max_side=300)
    with TestClient(create_app(settings)) as c:
        data = image_bytes("PNG", (900, 600))
        files = {"image": ("a.png", data, "image/png")}
        r = c.post("/pose/render?detect=false&model=hourglass", files=files)
        pose = c.post("/pose?detect=false&model=hourglass&heatmaps=none", files=files).json()
    assert r.status_code == 200
    out = Image.open(io.BytesIO(r.content))
    assert out.size == (300, 200)
    # the first person's box outline is drawn at the scaled place: the whole image here
    x, y, w, h = pose["persons"][0]["bbox"]
    assert (x, y, w, h) == (0, 0, 900, 600)
    assert np.asarray(out)[100, 0].tolist() != np.asarray(out)[100, 5].tolist()


def test_decoder_errors_reach_the_log_not_the_client(model_dir, caplog):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    data = image_bytes("PNG", (200, 200))
    broken = data[:len(data) // 2]  # the header is fine, the pixel data stops half way
    with TestClient(create_app(Settings(model_dir=model_dir, pool_size=1, intra_op_threads=1))) as c, \
            caplog.at_level(logging.INFO, logger="poseserve"):
        r = c.post("/pose?detect=false", files={"image": ("a.png", broken, "image/png")},
                   headers={"x-request-id": "req-42"})
    assert r.status_code == 400 and r.json()["detail"] == "could not decode the image data"
    assert any("req-42" in m and "could not decode the image data:" in m for m in caplog.messages)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "TIFF", "GIF", "BMP"])
def test_accepting_an_upload_decodes_no_pixels(fmt, monkeypatch):
    """Header checks run on the event loop: a pixel decode there (Pillow's PNG getexif()
    does one) stalls every request."""
    from PIL import ImageFile

    data = image_bytes(fmt, (300, 200))

    def no_decoding(self):
        raise AssertionError("pixels decoded while accepting the upload")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    upload = Upload(data, 10**6, 2048, 10**6)
    assert (upload.width, upload.height) == (300, 200)


def test_a_png_orientation_is_the_same_from_the_header_and_the_decode():
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90°: displayed portrait
    buf = io.BytesIO()
    Image.new("RGB", (300, 200)).save(buf, "PNG", exif=exif.tobytes())
    upload = Upload(buf.getvalue(), 10**6, 2048, 10**6)
    assert (upload.width, upload.height) == (200, 300)
    assert upload.rgb()[0].size == (200, 300)


def flat_jpeg(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128 if mode == "L" else (120, 130, 140)).save(buf, "JPEG", quality=60)
    return buf.getvalue()


def test_a_phone_jpeg_is_budgeted_at_its_reduced_decode_a_png_at_full_size():
    """48 MP (8000x6000, current phones) and 108 MP JPEGs decode by DCT scaling to at most
    2048 px and fit a 40 MP budget; a PNG of the same size decodes in full and does not."""
    for size, mode in (((8000, 6000), "RGB"), ((12000, 9000), "L")):
        upload = Upload(flat_jpeg(size, mode), 40_000_000, 2048, 4_000_000)
        assert upload.cost < 40_000_000 and (upload.width, upload.height) == size
        img, scale = upload.rgb()
        assert max(img.size) <= 2048 and scale == pytest.approx(size[0] / img.size[0])
    with pytest.raises(ImageError) as err:
        Upload(png((8000, 6000)), 40_000_000, 2048, 4_000_000)
    assert err.value.status == 413


def test_a_48_megapixel_photo_is_answered_through_the_api(model_dir):
    import time

    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    data = flat_jpeg((8000, 6000))
    with TestClient(create_app(Settings(model_dir=model_dir, pool_size=1, intra_op_threads=1,
                                        max_upload_bytes=20_000_000))) as client:
        t0 = time.perf_counter()
        r = client.post("/pose", params={"detect": "false", "heatmaps": "none"},
                        files={"image": ("phone.jpg", data, "image/jpeg")})
        elapsed = time.perf_counter() - t0
    assert r.status_code == 200, r.text
    assert r.json()["image"] == {"width": 8000, "height": 6000}
    assert elapsed < 3.0  # well under a second on an idle machine; slack for a busy CI


def test_a_render_of_a_large_photo_comes_back_at_the_documented_limit(model_dir):
    from fastapi.testclient import TestClient

    from app.main import create_app
    from app.settings import Settings

    with TestClient(create_app(Settings(model_dir=model_dir, pool_size=1, intra_op_threads=1))) as c:
        r = c.post("/pose/render", params={"detect": "false", "model": "cpm"},
                   files={"image": ("big.jpg", flat_jpeg((6000, 4500)), "image/jpeg")})
    assert r.status_code == 200, r.text
    assert Image.open(io.BytesIO(r.content)).size == (2048, 1536)
