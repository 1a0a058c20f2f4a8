"""Handing freed heap memory back to the operating system (glibc's malloc_trim), for analyses that stream large
tensors one after another."""

from __future__ import annotations

import ctypes
import functools
from collections.abc import Callable

__all__ = ["release_freed_memory"]


@functools.lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc only; absent on macOS/Windows/musl
    except (AttributeError, OSError):
        return None


def release_freed_memory() -> None:
    """Hand freed heap pages back to the OS. glibc keeps freed multi-MB blocks (each ΔW) in its heap for reuse;
    with tensors of varying sizes they fragment, and the process RSS grows to several tensor pairs although only
    one is alive. Trimming after each pair keeps streaming at about one pair (milliseconds per call)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
