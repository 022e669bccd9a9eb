"""What a solve holds in memory at its peak: ``stats.peak_bytes``.

A solver knows the arrays it holds (the iterate, the best iterate, the kept Jacobians, the
right-hand side, ...): :func:`held_bytes` sums them, counting each memory buffer once (views
and broadcasts are not copies). What it cannot see are the temporaries inside the calls it
makes — a model's evaluation of f and J (GRU: several (T, D, D) arrays), a scan's chunk
summaries, the Kalman smoother's covariances. :func:`call_with_peak` measures those: the
second call of a kind (a key: the model and its sizes, the scan's structure, ...) in a range of
sizes (rows within a factor of two) runs under :mod:`tracemalloc`, which sees every NumPy
allocation, and the bytes per row are kept for the later calls, which run untraced (the first
call is not measured: it may compile kernels, whose memory is not the call's). So each kind
of call is traced about once per process, and ``peak_bytes`` counts every array the solve
holds, the callees' temporaries included.

Allocations inside compiled (Numba) code are not traced; pitsolve's kernels allocate their
buffers in Python. Where :mod:`tracemalloc` is already tracing (the caller's own profiling)
or the call runs off the main thread (the threads engine), nothing is measured and only the
arrays the call returns are counted.
"""

from __future__ import annotations

import math
import threading
import tracemalloc
from collections.abc import Callable, Hashable, Iterator
from typing import Any

__all__ = ["OUT_CHUNK_BYTES", "call_with_peak", "held_bytes", "kind_of_call", "time_chunks"]

#: bytes of states per chunk when a one-pass solver (Sequential, ParallelScan) writes its
#: states into the caller's ``out=``: its work is then this, not the trajectory
OUT_CHUNK_BYTES = 64 * 2**20

_PER_ROW: dict[tuple[Hashable, int], float] = {}
_SEEN: set[tuple[Hashable, int]] = set()


def _buffer(array: Any) -> Any:
    """The array that owns the memory of ``array`` (a view's base, recursively)."""
    while getattr(array, "base", None) is not None and hasattr(array.base, "nbytes"):
        array = array.base
    return array


def held_bytes(*arrays: Any) -> int:
    """Bytes of the distinct buffers behind ``arrays`` (None entries, and arrays sharing a
    buffer with an earlier one, count nothing)."""
    seen: set[int] = set()
    total = 0
    for a in arrays:
        if a is None:
            continue
        owner = _buffer(a)
        if id(owner) not in seen:
            seen.add(id(owner))
            total += int(getattr(owner, "nbytes", 0))
    return total


def kind_of_call(kind: str, problem: Any, backend: Any, model: Any = None) -> tuple:
    """The key of :func:`call_with_peak` for a call of ``kind`` in a solve of ``problem`` on
    ``backend``: what its bytes per row depend on (the model's class and parameter shapes,
    the precision, the state size, a linear problem's structure)."""
    params = getattr(model, "params", {})
    return (kind, type(model).__qualname__, backend.name, str(problem.dtype), problem.D,
            getattr(problem, "structure", None), tuple(tuple(v.shape) for v in params.values()))


def _outputs(result: Any) -> int:
    """Bytes of the arrays in a call's result (an array or a tuple of them)."""
    parts = result if isinstance(result, tuple) else (result,)
    return held_bytes(*parts)


def call_with_peak(key: Hashable, rows: int, fn: Callable[[], Any]) -> tuple[Any, int]:
    """``(fn(), bytes)``: the result, and the bytes ``fn`` allocated at its peak (its result
    included), over ``rows`` rows of work. Measured with :mod:`tracemalloc` for the second
    call of ``key`` in a range of ``rows`` (a factor of two), else scaled from that measurement
    (module docstring); where nothing is measured yet, the bytes of the result."""
    rows = max(int(rows), 1)
    bucket = (key, int(math.log2(rows)))
    per_row = _PER_ROW.get(bucket)
    if per_row is not None:
        return fn(), int(per_row * rows)
    first = bucket not in _SEEN
    _SEEN.add(bucket)
    if first or tracemalloc.is_tracing() or (
        threading.current_thread() is not threading.main_thread()
    ):
        result = fn()
        return result, _outputs(result)
    tracemalloc.start()
    try:
        result = fn()
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    peak = max(peak, _outputs(result))
    _PER_ROW[bucket] = peak / rows
    return result, peak


def time_chunks(T: int, bytes_per_step: int,
                budget: int | None = None) -> Iterator[tuple[int, int]]:
    """Consecutive ``(a, b)`` covering ``[0, T)``, each of at most ``budget`` bytes
    (default :data:`OUT_CHUNK_BYTES`) at ``bytes_per_step`` (at least one step each)."""
    budget = OUT_CHUNK_BYTES if budget is None else budget
    n = max(1, int(budget // max(1, bytes_per_step)))
    for a in range(0, T, n):
        yield a, min(a + n, T)
