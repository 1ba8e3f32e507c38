"""Decoding uploads and the crop geometry, including property tests."""
from __future__ import annotations

import io
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from app.imaging import ImageError, decode_image
from app.pipeline import parse_bbox
from models.transforms import CropBox, crop_square
from tests.helpers import image_bytes

LIMIT = 4_000_000


@pytest.mark.parametrize("fmt,mode", [("JPEG", "RGB"), ("JPEG", "L"), ("JPEG", "CMYK"), ("PNG", "RGBA"),
                                      ("PNG", "P"), ("PNG", "LA"), ("PNG", "I;16"), ("WEBP", "RGB"),
                                      ("BMP", "RGB"), ("GIF", "P"), ("TIFF", "RGB"), ("TIFF", "F")])
def test_every_mode_decodes_to_rgb(fmt, mode):
    img = decode_image(image_bytes(fmt, (40, 30), mode), LIMIT)
    assert img.mode == "RGB" and img.size == (40, 30)


def test_sixteen_bit_images_are_rescaled_not_clipped():
    arr = (np.arange(64 * 8, dtype=np.uint16).reshape(8, 64) * 120)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    out = np.asarray(decode_image(buf.getvalue(), LIMIT))
    assert out.min() == 0 and out.max() == 255 and len(np.unique(out[..., 0])) > 100


def test_exif_orientation_is_applied_and_reported():
    img = Image.new("RGB", (60, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise on display
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif)
    assert decode_image(buf.getvalue(), LIMIT).size == (20, 60)


def test_animated_gif_uses_the_first_frame():
    frames = [Image.new("P", (10, 10), c) for c in (1, 2, 3)]
    buf = io.BytesIO()
    frames[0].save(buf, "GIF", save_all=True, append_images=frames[1:])
    assert decode_image(buf.getvalue(), LIMIT).size == (10, 10)


def test_tiny_image_decodes():
    assert decode_image(image_bytes("PNG", (1, 1)), LIMIT).size == (1, 1)


@pytest.mark.parametrize("data,status", [(b"", 400), (b"not an image at all", 400),
                                         (image_bytes("PNG")[:60], 400), (image_bytes("JPEG")[:200], 400)])
def test_bad_bytes_are_400(data, status):
    with pytest.raises(ImageError) as err:
        decode_image(data, LIMIT)
    assert err.value.status == status


def test_decompression_bomb_is_refused_from_the_header():
    # A PNG header claiming 100000 x 100000 pixels, with no pixel data behind it.
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    png = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
           + chunk(b"IEND", b""))
    with pytest.raises(ImageError) as err:
        decode_image(png, LIMIT)
    assert err.value.status == 413


def test_unsupported_format_is_415():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PPM")
    with pytest.raises(ImageError) as err:
        decode_image(buf.getvalue(), LIMIT)
    assert err.value.status == 415


def test_crop_maps_coordinates_both_ways_and_samples_the_right_pixels():
    img = Image.new("RGB", (200, 100), (0, 0, 0))
    img.putpixel((150, 40), (255, 255, 255))
    box = CropBox.around(130, 20, 40, 40, 1.0)  # a 40 px square whose centre is (150, 40)
    crop = crop_square(img, box, 40)
    row, col = np.unravel_index(crop.sum(2).argmax(), crop.shape[:2])
    assert (col, row) == (20, 20)
    uv = box.to_crop(np.array([150.5, 40.5]))
    np.testing.assert_allclose(box.to_image(uv), [150.5, 40.5])


def test_crop_outside_the_image_is_padded():
    img = Image.new("RGB", (10, 10), (255, 255, 255))
    crop = crop_square(img, CropBox(-100, -100, 50), 16)
    assert tuple(crop[0, 0]) == (124, 116, 104)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=2048))
def test_arbitrary_bytes_never_crash_the_decoder(data):
    try:
        img = decode_image(data, LIMIT)
        assert img.mode == "RGB"
    except ImageError as exc:
        assert exc.status in (400, 413, 415)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60), st.integers(1, 5000), st.integers(1, 5000))
def test_bbox_parsing_accepts_only_real_boxes(text, w, h):
    try:
        x, y, bw, bh = parse_bbox(text, w, h)
    except ValueError:
        return
    assert bw >= 4 and bh >= 4 and x < w and y < h and x + bw > 0 and y + bh > 0
    assert max(bw, bh) <= 4 * max(w, h)


@given(st.floats(-100, 100), st.floats(-100, 100), st.floats(0.5, 400), st.floats(0.5, 400))
def test_bbox_parsing_round_trips_valid_boxes(x, y, w, h):
    text = f"{x!r},{y!r},{w!r},{h!r}"
    normalised = max(abs(x), abs(y), w, h) <= 1
    if x >= 500 or y >= 500 or x + w <= 0 or y + h <= 0 or w < 4 or h < 4 or normalised:
        with pytest.raises(ValueError):
            parse_bbox(text, 500, 500)
    else:
        assert parse_bbox(text, 500, 500) == (x, y, w, h)
