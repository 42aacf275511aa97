"""Giving freed memory back to the OS after a model call (glibc keeps it in its arenas otherwise)."""

from __future__ import annotations

import ctypes
from collections.abc import Callable


def _find_malloc_trim() -> Callable[[int], int] | None:
    """The C library's ``malloc_trim`` where it has one (glibc); None elsewhere (musl, macOS, Windows).

    Looked up among the symbols already loaded into the process (``CDLL(None)``): ``ctypes.util.find_library``
    would run ``ldconfig`` in a subprocess, and the server runs no commands.
    """
    try:
        fn = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError, TypeError):
        return None
    fn.argtypes, fn.restype = [ctypes.c_size_t], ctypes.c_int
    return fn


_MALLOC_TRIM = _find_malloc_trim()


def release_freed_memory() -> None:
    """Hand the pages torch freed during a model call back to the OS (glibc keeps them in its arenas otherwise).

    Every request has its own prefix and canvas shapes, so CPU tensors of ever new sizes are freed into glibc's
    heaps, where the holes fragment and the resident size creeps up over a long editing session. ``malloc_trim``
    returns free pages (it also releases holes in the middle of a heap) and costs well under a millisecond here.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)
