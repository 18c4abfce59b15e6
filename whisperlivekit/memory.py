"""Keep a long-running server's memory flat (glibc only; elsewhere these do nothing).

Sessions allocate and free audio buffers and model outputs of every size from several threads.
glibc keeps freed memory in per-thread arenas and returns little of it to the system, so a server
whose sessions come and go grows by a few MB a minute without leaking anything (measured:
benchmarks/README.md, "Soak with sessions coming and going"). Two arenas and a trim at the end of
each session keep it flat; a user's own MALLOC_ARENA_MAX wins.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os

logger = logging.getLogger(__name__)

M_ARENA_MAX = -8  # mallopt parameter, from glibc's malloc.h
SERVER_ARENAS = 2


@functools.cache
def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None or "libc.so" not in name:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.malloc_trim, libc.mallopt  # noqa: B018 -- musl and others lack them
    except (OSError, AttributeError):
        return None
    return libc


def limit_arenas(arenas: int = SERVER_ARENAS) -> None:
    """At server start, before the models load their threads."""
    libc = _glibc()
    if libc is not None and "MALLOC_ARENA_MAX" not in os.environ and not libc.mallopt(M_ARENA_MAX, arenas):
        logger.debug("mallopt(M_ARENA_MAX) refused")


def release_free_memory() -> None:
    """Give freed heap pages back to the system (a few ms; call off the event loop)."""
    libc = _glibc()
    if libc is not None:
        libc.malloc_trim(0)
