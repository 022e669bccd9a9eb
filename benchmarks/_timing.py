"""Timing helpers shared by the benchmark scripts.

The benchmark machine's speed drifts by up to ±30 % over seconds (a shared virtual machine), so
a baseline timed once, before or after, decides a ratio as much as the code does. ``paired``
times the baseline and the route alternately, so that a drift hits both alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def quartiles(values: list[float]) -> tuple[float, float]:
    """(25th, 75th) percentiles (both the value itself for one value)."""
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4)
    return q[0], q[2]


def paired(base: Callable[[], Any], fn: Callable[[], Any], repeats: int,
           limit: float = float("inf")) -> tuple[float, float, tuple[float, float], Any]:
    """Median seconds of ``base`` and of ``fn``, timed alternately after one warm-up call of
    each; the quartiles of the per-pair ratios ``fn / base``; and ``fn``'s last result.
    Stops repeating once a call of ``fn`` took longer than ``limit`` seconds."""
    base()
    out = fn()
    t_base, t_fn = [], []
    for _ in range(repeats):
        t0 = time.perf_counter()
        base()
        t1 = time.perf_counter()
        out = fn()
        t_fn.append(time.perf_counter() - t1)
        t_base.append(t1 - t0)
        if t_fn[-1] > limit:
            break
    spread = quartiles([f / b for b, f in zip(t_base, t_fn, strict=True)])
    return statistics.median(t_base), statistics.median(t_fn), spread, out
