"""Keep freed memory in the process: fewer page faults for repeated solves.

glibc's ``malloc`` gives large freed blocks back to the operating system (``munmap``, or a trim
of the heap top once more than ``M_TRIM_THRESHOLD`` bytes are free), so an algorithm that
allocates and frees trajectory-sized arrays every iteration touches fresh pages again and again.
Each first touch of a page is a page fault: ~0.1–0.3 µs on bare metal, but ~3 µs in the
virtual machine of our benchmarks, where a DEER solve of ``shplrnn_3x50`` at T = 10⁵ took
13 000 faults and 79 ms instead of 36 ms when the heap happened to be trimmed between
iterations (whether it is depends on everything the process allocated before).

:func:`tune_allocator` sets the two thresholds once for the whole process, so that blocks up
to 32 MB come from the heap and freed memory up to ``keep_bytes`` stays there for the next
allocation. It changes the allocation policy of the whole process, so a library never calls it
on its own: the ``pitsolve`` command does, and scripts and benchmarks may. The environment
variables ``MALLOC_MMAP_THRESHOLD_=33554432 MALLOC_TRIM_THRESHOLD_=1073741824`` do the same
for any program without code.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

__all__ = ["tune_allocator"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc refuses more on 64-bit systems


def tune_allocator(keep_bytes: int = 2**30) -> bool:
    """Make glibc keep up to ``keep_bytes`` of freed memory and serve blocks up to 32 MB from
    the heap. Returns True if set, False where the C library is not glibc (nothing changes).

    The process's resident memory then stays at its peak heap use (up to ``keep_bytes`` above
    what is in use) instead of shrinking after every large ``free``.
    """
    if isinstance(keep_bytes, bool) or not isinstance(keep_bytes, int) or keep_bytes < 0:
        raise ValueError(f"keep_bytes must be a non-negative integer, got {keep_bytes!r}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    keep = min(keep_bytes, 2**31 - 1)
    return bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(
        mallopt(_M_TRIM_THRESHOLD, keep)
    )
