"""Device functions shared by the CUDA kernels."""

from __future__ import annotations

from numba import cuda

__all__ = ["split_index"]


@cuda.jit(device=True, inline=True)
def split_index(i, inner, middle):  # pragma: no cover - device code
    """``(outer, mid, inn)``: the flat thread index ``i`` over a C-ordered grid
    ``(outer, middle, inner)``."""
    return i // (inner * middle), (i // inner) % middle, i % inner
