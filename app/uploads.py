"""An accepted upload, decoded at most once per request when decoding is not cheap.

Why: one request may need the pixels three times (the detector, the pose crops, the
rendered picture). A JPEG decodes each time at just the resolution that use needs (DCT
scaling makes that cheaper than keeping one large copy). Every other format cannot
decode below full size, so it is decoded once, bounded to ``max_side``, and shared.

Large decodes (``cost`` over ``POSE_LARGE_IMAGE_PIXELS``) run in ``DecodePool``, a small
bounded thread pool, *before* the request takes an inference session: a 2-second PNG
then holds up neither small requests nor a model, and only ``decode_workers`` such
decodes are in memory at once.
"""
from __future__ import annotations

import asyncio
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

from fastapi import HTTPException
from PIL import Image

from app.imaging import JPEG_FORMATS, ImageError, decode_cost, load_rgb, open_image, oriented_size, reopen
from app.observability import current_request_id
from app.pool import Overloaded

log = logging.getLogger("poseserve")


def image_error(exc: ImageError) -> HTTPException:
    """The client hears the generic reason; the decoder's own words go to the log only,
    under the request id the client was given."""
    if exc.cause:
        log.info("request %s: %s: %s", current_request_id.get(), exc.detail, exc.cause)
    return HTTPException(exc.status, exc.detail)


class Upload:
    """The upload's bytes, upright (width, height) and decode cost, all read from the header."""

    def __init__(self, data: bytes, max_pixels: int, max_side: int, large_pixels: int) -> None:
        img = open_image(data, max_pixels, max_side)
        self.data = data
        self.width, self.height = oriented_size(img)
        self.format = img.format
        self.max_side = max_side
        self.cost = decode_cost(img, max_side)
        self.large = self.cost > large_pixels
        self._decoded: tuple[Image.Image, float] | None = None
        self._lock = threading.Lock()
        self.decode_s = 0.0  # time spent decoding pixels so far, every use together (timing_ms)
        self.prepared_s = 0.0  # of which in the decode pool, before the request's pipeline ran

    @property
    def decoded(self) -> bool:
        return self._decoded is not None

    def rgb(self, max_reduction: float = 1.0) -> tuple[Image.Image, float]:
        """Upright RGB at no more than ``max_side`` (and, for a JPEG, at no more than
        1/``max_reduction`` of full resolution), with its scale (original px per pixel).

        The shared image is never drawn on or modified: callers copy before drawing.
        """
        start = time.perf_counter()
        if self._decoded is None and self.format in JPEG_FORMATS and not self.large:
            decoded = load_rgb(reopen(self.data), max_reduction, self.max_side)
            self.decode_s += time.perf_counter() - start
            return decoded
        with self._lock:  # one decode, whoever asks first
            if self._decoded is None:
                self._decoded = load_rgb(reopen(self.data), 1.0, self.max_side)
                self.decode_s += time.perf_counter() - start
            return self._decoded


class DecodePool:
    """At most ``workers`` large decodes at once; a request waits for one up to ``timeout_s``."""

    def __init__(self, workers: int, timeout_s: float) -> None:
        self.workers = workers
        self.timeout_s = timeout_s
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="decode")
        self._slots: asyncio.Semaphore | None = None

    async def prepare(self, upload: Upload) -> None:
        """Decode a large upload now, in the pool; a small one is left to decode where used."""
        if not upload.large or upload.decoded:
            return
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        try:
            await asyncio.wait_for(self._slots.acquire(), self.timeout_s)
        except TimeoutError:
            raise Overloaded(f"every large-image decoder stayed busy for {self.timeout_s:g} s",
                             self.timeout_s) from None
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, upload.rgb)
            upload.prepared_s = upload.decode_s
        finally:
            self._slots.release()

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
