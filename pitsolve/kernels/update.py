r"""One-pass reductions of the Newton iterations: finiteness and the size of a step.

Each DEER iteration adds its step δ to the iterate and measures it,
:math:`\max |\delta|` and :math:`\max |h^{(k+1)}|`, checking that both are finite; damped
steps measure a new iterate against the old one. In NumPy that is several passes and
temporaries of the trajectory's size per iteration; the Numba versions here are one pass
each, in parallel over chunks of steps, branch-free (so that they vectorise), and allocate
nothing (on the 2-core benchmark machine a fresh page costs ~3 µs). Finiteness of a
contiguous array is counted on the bit patterns (exponent all ones), integer work only. The
``*_xp`` versions, written against the array namespace, are the reference and serve CuPy
arrays; a :class:`~pitsolve.backends.Backend` chooses one of each pair.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from .._arrays import array_namespace

__all__ = ["all_finite", "all_finite_xp", "apply_step", "apply_step_xp", "step_size",
           "step_size_xp"]


#: Elements per parallel task of the reductions (and below which they run serially).
_CHUNK = 1 << 15


@numba.njit(cache=True, nogil=True, inline="always")
def _count_nonfinite_range(u, exponent, lo, hi):  # pragma: no cover - jitted
    """Entries of the bit patterns ``u`` in [lo, hi) whose exponent bits are all set (±inf,
    NaN): integer work only, so it vectorises."""
    k = 0
    for i in range(lo, hi):
        k += (u[i] & exponent) == exponent
    return k


@numba.njit(cache=True, nogil=True, parallel=True)
def _count_nonfinite(u, exponent, counts):  # pragma: no cover - jitted
    n = u.shape[0]
    for c in numba.prange(counts.shape[0]):
        counts[c] = _count_nonfinite_range(u, exponent, c * _CHUNK, min(n, (c + 1) * _CHUNK))


@numba.njit(cache=True, nogil=True)
def _count_nonfinite_serial(u, exponent):  # pragma: no cover - jitted
    return _count_nonfinite_range(u, exponent, 0, u.shape[0])


_BITS = {np.dtype(np.float64): (np.uint64, 0x7FF0000000000000),
         np.dtype(np.float32): (np.uint32, 0x7F800000)}


def _nonfinite(x: np.ndarray) -> int:
    """How many entries of the contiguous float32/float64 array ``x`` are not finite."""
    uint, exponent = _BITS[x.dtype]
    u = x.reshape(-1).view(uint)
    if u.shape[0] < 2 * _CHUNK:
        return int(_count_nonfinite_serial(u, uint(exponent)))
    counts = np.empty(-(-u.shape[0] // _CHUNK), dtype=np.int64)
    _count_nonfinite(u, uint(exponent), counts)
    return int(counts.sum())


@numba.njit(cache=True, nogil=True, inline="always")
def _step_range(x, y, add, b, lo, hi):  # pragma: no cover - jitted
    """Over steps [lo, hi) of batch element ``b``: ``add``: ``x += y`` (y the step), and
    (all of y finite, max |y|, max |x + y|); else (x the new iterate, y the old) (all of x
    finite, max |x - y|, max |x|). Branch-free maxima, so that the loop vectorises."""
    step = 0.0
    size = 0.0
    finite = True
    for t in range(lo, hi):
        for d in range(x.shape[2]):
            if add:
                v = y[b, t, d]
                new = x[b, t, d] + v
                x[b, t, d] = new
            else:
                new = x[b, t, d]
                v = new - y[b, t, d]
            finite &= np.isfinite(v) & np.isfinite(new)
            s = abs(v)
            a = abs(new)
            step = s if s > step else step
            size = a if a > size else size
    return finite, step, size


@numba.njit(cache=True, nogil=True, parallel=True)
def _steps(x, y, add, finite, step, size):  # pragma: no cover - jitted
    """:func:`_step_range` per (batch element, chunk of rows) of ``(B, T, D)`` arrays."""
    T = x.shape[1]
    rows = max(1, _CHUNK // x.shape[2])
    C = finite.shape[0] // x.shape[0]
    for task in numba.prange(finite.shape[0]):
        b, c = task // C, task % C
        finite[task], step[task], size[task] = _step_range(
            x, y, add, b, c * rows, min(T, (c + 1) * rows)
        )


def _step_norms(x: np.ndarray, y: np.ndarray, add: bool) -> tuple[bool, float, float]:
    """:func:`_step_range` over NumPy arrays of one shape ``(..., T, D)`` (others: the
    reference)."""
    if x.ndim not in (2, 3) or x.shape != y.shape:
        return _step_norms_xp(x, y, add)
    if x.ndim == 2:
        x, y = x[None], y[None]
    if not add and not x.flags.writeable:  # (one kernel for both modes writes to x)
        x = x.copy()
    B, T, D = x.shape
    tasks = B * -(-T // max(1, _CHUNK // D))
    finite = np.empty(tasks, dtype=np.bool_)
    step, size = np.empty(tasks), np.empty(tasks)
    _steps(x, y, add, finite, step, size)
    if not finite.all():
        return False, float("inf"), float("inf")
    return True, float(step.max()), float(size.max())


def _step_norms_xp(x: Any, y: Any, add: bool) -> tuple[bool, float, float]:
    """:func:`_step_range` written against the array namespace (the reference)."""
    xp = array_namespace(x, y)
    if add:
        x += y
        step, new = y, x
    else:
        step, new = x - y, x
    if not bool(xp.isfinite(step).all() & xp.isfinite(new).all()):
        return False, float("inf"), float("inf")
    return True, float(xp.abs(step).max()), float(xp.abs(new).max())


def apply_step(h: Any, delta: Any) -> tuple[bool, float, float]:
    """``h += delta`` in place, for NumPy arrays of one shape ``(..., T, D)``; returns ``(all
    finite, max |delta|, max |h + delta|)`` (the norms meaningless (inf) when not finite;
    ``h`` is then updated all the same, and the caller restores it)."""
    return _step_norms(h, delta, True)


def apply_step_xp(h: Any, delta: Any) -> tuple[bool, float, float]:
    """:func:`apply_step` for arrays of any namespace (the reference)."""
    return _step_norms_xp(h, delta, True)


def all_finite(x: np.ndarray) -> bool:
    """True if every entry of the NumPy array ``x`` is finite (one pass over the bit patterns
    of a contiguous float32/float64 array)."""
    if x.flags.c_contiguous and x.dtype in _BITS:
        return _nonfinite(x) == 0
    return all_finite_xp(x)


def all_finite_xp(x: Any) -> bool:
    """:func:`all_finite` for arrays of any namespace (the reference)."""
    return bool(array_namespace(x).isfinite(x).all())


def step_size(new: Any, old: Any) -> tuple[bool, float, float]:
    """``(all finite, max |new - old|, max |new|)`` for NumPy arrays of one shape
    ``(..., T, D)``; the norms are meaningless (inf) when not all of ``new`` is finite."""
    return _step_norms(new, old, False)


def step_size_xp(new: Any, old: Any) -> tuple[bool, float, float]:
    """:func:`step_size` for arrays of any namespace (the reference)."""
    return _step_norms_xp(new, old, False)
