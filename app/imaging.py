"""Upload decoding: header checks before any pixel is decoded, then bounded upright 8-bit RGB.

What decoding an image costs is known from its header: width × height × the bytes per
pixel its mode is worked on at (``decode_weight``: an RGBA or 16-bit image costs more
than RGB at the same size). That weighted count is the budget ``POSE_MAX_PIXELS`` bounds.
Decoded images never exceed ``max_side`` pixels on their long side (nothing downstream
needs more: the detector sees 512 px, a pose crop 192): a JPEG gets there by libjpeg's
DCT scaling before decoding, other formats by ``Image.reduce`` right after.

What happens to the pixels next (the person crop and normalisation) is
``models.transforms``, shared with training and evaluation.
"""
from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image, UnidentifiedImageError

from models.transforms import PAD_RGB

# Our own budget is checked from the header (see ``open_image``); Pillow's global bomb
# check would otherwise fire first with a less useful error.
Image.MAX_IMAGE_PIXELS = None

SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF"})
JPEG_FORMATS = frozenset({"JPEG", "MPO"})
# Bytes per pixel each mode is decoded and converted at (palette images become RGBA,
# 16-bit and float grey become float32 for rescaling); unknown modes count as 4.
WORKING_BYTES = {"1": 1, "L": 1, "LA": 2, "La": 2, "P": 4, "PA": 4, "RGB": 3, "YCbCr": 3, "LAB": 3,
                 "HSV": 3, "RGBA": 4, "RGBa": 4, "RGBX": 4, "CMYK": 4, "I": 4, "F": 4,
                 "I;16": 4, "I;16B": 4, "I;16L": 4, "I;16N": 4}


class ImageError(ValueError):
    """An upload that is not an acceptable image.

    ``detail`` is what the client is told (generic, no library internals); ``cause`` is
    what went wrong inside the decoder, for the server log only.
    """

    def __init__(self, status: int, detail: str, cause: str = "") -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.cause = cause


def decode_weight(img: Image.Image) -> float:
    """Decoding cost per pixel relative to 8-bit RGB (RGBA 4/3, 48-bit RGB 2, ...)."""
    working = WORKING_BYTES.get(img.mode, 4)
    args = img.tile[0][3] if img.tile else ""
    rawmode = args if isinstance(args, str) else str(args[0]) if isinstance(args, tuple) and args else ""
    if ";16" in rawmode:  # 16 bits per sample on the wire (PNG/TIFF), whatever the mode
        working = max(working, 2 * len(img.getbands()))
    return working / 3


def open_image(data: bytes, max_pixels: int, max_side: int | None = None) -> Image.Image:
    """Parse the header only: format and decode-budget checks before any pixel is decoded.

    Refusing a decompression bomb here costs nothing; decoding it would cost gigabytes.
    With ``max_side`` the budget is checked against what the bounded decode touches: a
    48 MP phone JPEG decodes by DCT scaling at 1/2 or 1/4 and fits; a PNG of that size
    decodes in full and does not.
    """
    if not data:
        raise ImageError(400, "empty upload: no image bytes received")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(400, "could not decode the upload as an image") from None
    except Exception as exc:  # Pillow raises assorted errors on corrupt headers
        raise ImageError(400, "could not decode the upload as an image", repr(exc)) from None
    if img.format not in SUPPORTED_FORMATS:
        raise ImageError(415, f"unsupported image format {img.format!r}; "
                              f"use one of {sorted(SUPPORTED_FORMATS - {'MPO'})}")
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageError(400, "image has zero width or height")
    weighted = decode_cost(img, max_side) if max_side else width * height * decode_weight(img)
    if weighted > max_pixels:
        raise ImageError(413, f"image of {width}x{height} {img.mode} costs {weighted:.0f} RGB pixels to "
                              f"decode; the limit is {max_pixels} (RGBA and 16-bit images count more; "
                              "JPEGs are decoded reduced, other formats at full size)")
    return img


# EXIF orientation → the transpose that makes the image upright (as ImageOps.exif_transpose).
TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
             4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
             6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90}


def orientation(img: Image.Image) -> int:
    """The EXIF orientation (1-8) known from the header, without decoding a pixel.

    ``getexif()`` on a PNG decodes the whole image to look for an ``eXIf`` chunk after the
    pixel data — a 2-second decode on the event loop per upload. A PNG's orientation is
    therefore taken only from an ``eXIf`` chunk before its pixels (where the PNG spec
    puts it); the same value is used when decoding, so the size reported from the header
    and the decoded image always agree.
    """
    try:
        if img.format == "PNG":
            raw = img.info.get("exif")
            exif = Image.Exif()
            if raw:
                exif.load(raw)
        else:
            exif = img.getexif()
        value = exif.get(0x0112, 1)
    except Exception:  # a broken EXIF block is ignored, as exif_transpose would
        return 1
    return value if value in TRANSPOSE else 1


def oriented_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after the EXIF orientation, from the header."""
    w, h = img.size
    return (h, w) if orientation(img) in (5, 6, 7, 8) else (w, h)


def decode_cost(img: Image.Image, max_side: int | None) -> float:
    """Weighted pixels a bounded decode of ``img`` touches: a JPEG's DCT scaling (1/2..1/8)
    shrinks its decode, other formats decode in full before they are reduced."""
    w, h = img.size
    if img.format in JPEG_FORMATS and max_side:
        reduction = min(8, 2 ** max(0, math.floor(math.log2(max(w, h) / max_side)))) if max(w, h) > max_side else 1
        return w * h / reduction ** 2 * decode_weight(img)
    return w * h * decode_weight(img)


def load_rgb(img: Image.Image, max_reduction: float = 1.0, max_side: int | None = None
             ) -> tuple[Image.Image, float]:
    """Decode an opened image to upright 8-bit RGB; returns (image, scale).

    ``max_reduction``: the caller needs no more than 1/max_reduction of the resolution (a
    JPEG then decodes at 1/2, 1/4 or 1/8 scale: far cheaper than decoding, then resizing);
    ``max_side``: the result's long side never exceeds it. ``scale`` = original pixels per
    decoded pixel, to map coordinates back.
    """
    width = img.size[0]
    upright = TRANSPOSE.get(orientation(img))  # read before decoding, as ``oriented_size`` did
    if max_side is not None:
        max_reduction = max(max_reduction, max(img.size) / max_side)
    try:
        if max_reduction >= 2 and img.format in JPEG_FORMATS:
            img.draft("RGB", (max(1, int(img.size[0] / max_reduction)),
                              max(1, int(img.size[1] / max_reduction))))
        img.seek(0)  # animated images: the first frame
        img.load()
        if max_side is not None and max(img.size) > max_side:
            img = _shrink_to(img, max_side)
        scale = width / img.size[0]
        if upright is not None:
            img = img.transpose(upright)
        return _to_rgb(img), scale
    except ImageError:
        raise
    except Exception as exc:  # truncated or corrupt pixel data
        raise ImageError(400, "could not decode the image data", repr(exc)) from None


def decode_image(data: bytes, max_pixels: int, max_side: int | None = None) -> Image.Image:
    """Header checks, then an upright RGB decode (bounded by ``max_side`` when given)."""
    return load_rgb(open_image(data, max_pixels, max_side), max_side=max_side)[0]


def reopen(data: bytes) -> Image.Image:
    """A fresh lazy image from bytes that ``open_image`` already accepted.

    Decoding mutates a Pillow image (``draft`` shrinks it in place), so every consumer
    of one upload opens its own.
    """
    return Image.open(io.BytesIO(data))


def _shrink_to(img: Image.Image, max_side: int) -> Image.Image:
    """Exactly ``max_side`` on the long side: the cheap integer box-filter ``reduce`` as far as
    it keeps at least that, then one small resize (``reduce`` alone would overshoot: a
    3000 px decode reduced by 2 is 1500 px, not the 2048 allowed)."""
    factor = max(img.size) // max_side
    if factor >= 2:
        img = _reduce(img, factor)
    if max(img.size) > max_side:
        img = _to_rgb(img)
        k = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * k)), max(1, round(img.height * k))), Image.Resampling.BILINEAR)
    return img


def _reduce(img: Image.Image, factor: int) -> Image.Image:
    """Integer box-filter shrink, before any mode conversion (it then converts less)."""
    try:
        return img.reduce(factor)
    except ValueError:  # modes reduce() does not take (palette, 16-bit): convert first
        return _to_rgb(img).reduce(factor)


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; 16-bit and float images are rescaled, not clipped."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.round().astype(np.uint8), "L")
    elif img.mode == "P" or img.mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa"):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", img.size, PAD_RGB)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return img.convert("RGB") if img.mode != "RGB" else img
