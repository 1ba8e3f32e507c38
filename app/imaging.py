"""Upload decoding: header checks before any pixel is decoded, then upright 8-bit RGB.

What happens to the pixels next (the person crop and normalisation) is
``models.transforms``, shared with training and evaluation.
"""
from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from models.transforms import PAD_RGB

# Our own pixel limit is checked from the header (see ``decode_image``); Pillow's global
# bomb check would otherwise fire first with a less useful error.
Image.MAX_IMAGE_PIXELS = None

SUPPORTED_FORMATS = frozenset({"JPEG", "MPO", "PNG", "WEBP", "BMP", "GIF", "TIFF"})


class ImageError(ValueError):
    """An upload that is not an acceptable image; ``status`` is the HTTP code to answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def open_image(data: bytes, max_pixels: int) -> Image.Image:
    """Parse the header only: format and pixel-count checks before any pixel is decoded.

    Refusing a decompression bomb here costs nothing; decoding it would cost gigabytes.
    """
    if not data:
        raise ImageError(400, "empty upload: no image bytes received")
    try:
        img = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise ImageError(400, "could not decode the upload as an image") from None
    except Exception as exc:  # Pillow raises assorted errors on corrupt headers
        raise ImageError(400, f"could not decode the upload as an image: {exc}") from None
    if img.format not in SUPPORTED_FORMATS:
        raise ImageError(415, f"unsupported image format {img.format!r}; "
                              f"use one of {sorted(SUPPORTED_FORMATS - {'MPO'})}")
    width, height = img.size
    if width < 1 or height < 1:
        raise ImageError(400, "image has zero width or height")
    if width * height > max_pixels:
        raise ImageError(413, f"image has {width * height} pixels; the limit is {max_pixels}")
    return img


def oriented_size(img: Image.Image) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after the EXIF orientation, from the header."""
    w, h = img.size
    try:
        orientation = img.getexif().get(0x0112, 1)
    except Exception:  # a broken EXIF block is ignored, as exif_transpose would
        orientation = 1
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def load_rgb(img: Image.Image, max_reduction: float = 1.0) -> tuple[Image.Image, float]:
    """Decode an opened image to upright 8-bit RGB; returns (image, scale).

    ``max_reduction`` lets a JPEG decode at 1/2, 1/4 or 1/8 scale (libjpeg's DCT
    scaling, far cheaper than decoding then resizing) when the caller needs less detail;
    ``scale`` = original pixels per decoded pixel, to map coordinates back.
    """
    width = img.size[0]
    try:
        if max_reduction >= 2 and img.format in ("JPEG", "MPO"):
            img.draft("RGB", (max(1, int(img.size[0] / max_reduction)),
                              max(1, int(img.size[1] / max_reduction))))
        img.seek(0)  # animated images: the first frame
        img.load()
        scale = width / img.size[0]
        img = ImageOps.exif_transpose(img)
        return _to_rgb(img), scale
    except Exception as exc:  # truncated or corrupt pixel data
        raise ImageError(400, f"could not decode the image data: {exc}") from None


def decode_image(data: bytes, max_pixels: int) -> Image.Image:
    """Header checks, then a full-resolution upright RGB decode."""
    return load_rgb(open_image(data, max_pixels))[0]


def reopen(data: bytes) -> Image.Image:
    """A fresh lazy image from bytes that ``open_image`` already accepted.

    Decoding mutates a Pillow image (``draft`` shrinks it in place), so every consumer
    of one upload — several models in /pose/compare, the renderer — opens its own.
    """
    return Image.open(io.BytesIO(data))


def _to_rgb(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to 8-bit RGB; 16-bit and float images are rescaled, not clipped."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        arr = np.asarray(img, dtype=np.float32)
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
        img = Image.fromarray(arr.round().astype(np.uint8), "L")
    elif img.mode == "P" or img.mode == "PA":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "La", "RGBa"):
        background = Image.new("RGB", img.size, PAD_RGB)
        background.paste(img.convert("RGBA"), mask=img.convert("RGBA").getchannel("A"))
        return background
    return img.convert("RGB") if img.mode != "RGB" else img
