"""The allocator tuning that keeps a long-running server's RSS flat (glibc)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from whisperlivekit.memory import _glibc

pytestmark = pytest.mark.skipif(_glibc() is None, reason="glibc only")

# Heap blocks freed below a live one stay in the process until trimmed: the pattern of a session's
# buffers freed while the engine's own allocations stay.
SCRIPT = """
import psutil
from whisperlivekit.memory import release_free_memory
rss = lambda: psutil.Process().memory_info().rss / 2**20
blocks = [bytearray(64 * 1024) for _ in range(3000)]  # ~190 MiB, each under glibc's mmap threshold
keep = bytearray(64 * 1024)  # allocated last: pins the top of the heap
del blocks
before = rss()
release_free_memory()
print(before, rss())
"""


def test_release_gives_freed_heap_back_to_the_system() -> None:
    out = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True)
    before, after = map(float, out.stdout.split())
    assert before - after > 100, (before, after)
