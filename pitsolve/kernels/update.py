r"""One-pass reductions of the Newton iterations: finiteness and the size of a step.

Each DEER iteration checks that the new Jacobians and iterate are finite and measures the step,
:math:`\max |h^{(k+1)} - h^{(k)}|` and :math:`\max |h^{(k+1)}|`. In NumPy that is six passes
and four temporaries of the trajectory's size per iteration; the Numba versions here are one
pass each and allocate nothing (on the 2-core benchmark machine a fresh page costs ~3 µs, and a
DEER solve at T = 10⁵ had allocated ~27 MB per iteration). The NumPy versions are the
reference and serve CuPy arrays.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from ..backends import array_namespace

__all__ = ["all_finite", "step_size"]


@numba.njit(cache=True, nogil=True)
def _all_finite(x):  # pragma: no cover - jitted
    for v in x:
        if not np.isfinite(v):
            return False
    return True


@numba.njit(cache=True, nogil=True)
def _step_size(new, old):  # pragma: no cover - jitted
    """(all finite, max |new - old|, max |new|) over (B, T, D) arrays of any strides."""
    step = 0.0
    size = 0.0
    B, T, D = new.shape
    for b in range(B):
        for t in range(T):
            for d in range(D):
                v = new[b, t, d]
                if not np.isfinite(v):
                    return False, np.inf, np.inf
                s = abs(v - old[b, t, d])
                a = abs(v)
                if s > step:
                    step = s
                if a > size:
                    size = a
    return True, step, size


def _numba_ok(*arrays: Any) -> bool:
    return all(isinstance(a, np.ndarray) and a.dtype.kind == "f" for a in arrays)


def all_finite(x: Any) -> bool:
    """True if every entry of ``x`` is finite."""
    if _numba_ok(x) and x.flags.c_contiguous:
        return bool(_all_finite(x.reshape(-1)))
    xp = array_namespace(x)
    return bool(xp.isfinite(x).all())


def step_size(new: Any, old: Any) -> tuple[bool, float, float]:
    """``(all finite, max |new - old|, max |new|)`` for arrays of one shape ``(..., T, D)``;
    the norms are meaningless (inf) when not all of ``new`` is finite."""
    if _numba_ok(new, old) and new.ndim in (2, 3) and new.shape == old.shape:
        if new.ndim == 2:
            new, old = new[None], old[None]
        finite, step, size = _step_size(new, old)
        return bool(finite), float(step), float(size)
    xp = array_namespace(new, old)
    if not bool(xp.isfinite(new).all()):
        return False, float("inf"), float("inf")
    return True, float(xp.abs(new - old).max()), float(xp.abs(new).max())
