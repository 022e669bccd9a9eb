"""Device functions shared by the CUDA kernels."""

from __future__ import annotations

from numba import cuda

__all__ = ["diag_map", "split_index"]


@cuda.jit(device=True, inline=True)
def split_index(i, inner, middle):  # pragma: no cover - device code
    """``(outer, mid, inn)``: the flat thread index ``i`` over a C-ordered grid
    ``(outer, middle, inner)``."""
    return i // (inner * middle), (i // inner) % middle, i % inner


@cuda.jit(device=True, inline=True)
def diag_map(A, b, bi, T, s, d, rev, zero):  # pragma: no cover - device code
    """``(a, b)`` of step s of a diagonal scan: forward ``(A_s, b_s)``; reverse (the
    transposed scan) ``(A_{t+1}, g_t)`` with t = T-1-s, and ``zero`` for A at t = T-1."""
    if rev:
        t = T - 1 - s
        a = A[bi, t + 1, d] if t + 1 < T else zero
        return a, b[bi, t, d]
    return A[bi, s, d], b[bi, s, d]
