r"""The DEER convergence test in one pass: residual norms of a trajectory guess.

For a guess :math:`h` and :math:`f_t = f(h_{t-1})`, per batch element b and step t,

.. math::

    e_{b,t} = \|h_{b,t} - f_{b,t}\|_\infty,\qquad
    q_{b,t} = \frac{e_{b,t}}{\mathrm{atol} + \mathrm{rtol}\,\|h_{b,t}\|_\infty}.

:func:`residual_norms` returns :math:`\max_t e_{b,t}`, :math:`\max_t q_{b,t}` and the first t at
which any batch element has :math:`q_{b,t} > 1` (the end of the converged prefix).
:func:`residual_norms_xp` (any array namespace) is the reference; :func:`residual_norms`, for
NumPy arrays, fuses the passes (the test runs every iteration, so on a CPU it is worth one
pass instead of six), runs in parallel over chunks of steps and is branch-free, so that it
vectorises (NaN is tracked on the side). A :class:`~pitsolve.backends.Backend` chooses one.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from .._arrays import array_namespace

__all__ = ["residual_norms", "residual_norms_xp"]


def residual_norms_xp(
    h: Any, f: Any, atol: float, rtol: float, out: Any = None
) -> tuple[Any, Any, int]:
    """:func:`residual_norms` written against the array namespace of ``h`` (NumPy or CuPy):
    the reference, several passes."""
    xp = array_namespace(h, f)
    if out is not None:
        xp.subtract(f, h, out=out)
    rn = xp.abs(h - f).max(axis=-1)
    ratio = rn / (atol + rtol * xp.abs(h).max(axis=-1))
    bad = (~(ratio <= 1)).reshape(-1, ratio.shape[-1]).any(axis=0)  # NaN counts as bad
    first = int(xp.argmax(bad)) if bool(bad.any()) else int(bad.shape[0])
    return rn.max(axis=-1), ratio.max(axis=-1), first


@numba.njit(cache=True, nogil=True)
def _first_nan(h, f, b, lo, hi):  # pragma: no cover - jitted
    """The first t in [lo, hi) with a NaN in h_t - f_t, or hi."""
    for t in range(lo, hi):
        for d in range(h.shape[2]):
            r = h[b, t, d] - f[b, t, d]
            if r != r:
                return t
    return hi


@numba.njit(cache=True, nogil=True, inline="always")
def _residual_range(h, f, atol, rtol, b, lo, hi, out):  # pragma: no cover - jitted
    """``(max e, max q, first bad t or hi)`` of batch element ``b`` over steps [lo, hi);
    ``out[b, t] = f_t - h_t`` unless ``out`` is empty.

    Branch-free, so that it vectorises over t: the maxima by selects (which drop NaN) and
    NaN tracked on the side, then put back."""
    D = h.shape[2]
    e_max = 0.0
    q_max = 0.0
    fb = hi
    nan = False
    write = out.shape[0] > 0
    for t in range(lo, hi):
        e = 0.0
        s = 0.0
        for d in range(D):
            x = h[b, t, d]
            y = f[b, t, d] - x
            if write:
                out[b, t, d] = y
            r = abs(y)
            a = abs(x)
            nan |= (r != r) | (a != a)
            e = r if r > e else e
            s = a if a > s else s
        ratio = e / (atol + rtol * s)
        e_max = e if e > e_max else e_max
        q_max = ratio if ratio > q_max else q_max
        fb = t if (ratio > 1.0) & (t < fb) else fb
    if nan:  # a NaN residual: the norms are NaN, and a NaN step is bad too
        return np.nan, np.nan, _first_nan(h, f, b, lo, fb)
    return e_max, q_max, fb


#: Steps per parallel task of the convergence test.
_STEPS = 1 << 13


@numba.njit(cache=True, nogil=True, parallel=True)
def _residual_kernel(h, f, atol, rtol, err, q, first, out):  # pragma: no cover - jitted
    """Per (batch element, chunk of ``_STEPS`` steps): the chunk's norms, into ``(B, C)``."""
    B, T = h.shape[0], h.shape[1]
    C = err.shape[1]
    for task in numba.prange(B * C):
        b, c = task // C, task % C
        hi = min(T, (c + 1) * _STEPS)
        e, r, fb = _residual_range(h, f, atol, rtol, b, c * _STEPS, hi, out)
        err[b, c] = e
        q[b, c] = r
        first[b, c] = fb if fb < hi else T


@numba.njit(cache=True, nogil=True)
def _residual_kernel_serial(h, f, atol, rtol, err, q, first, out):  # pragma: no cover
    """One task: no parallel region to start (and wait for on a busy machine)."""
    T = h.shape[1]
    err[0, 0], q[0, 0], first[0, 0] = _residual_range(h, f, atol, rtol, 0, 0, T, out)


def residual_norms(
    h: Any, f: Any, atol: float, rtol: float, out: Any = None
) -> tuple[Any, Any, int]:
    """``(max_t e, max_t q, first bad t)`` for NumPy arrays ``(..., T, D)``; the first two have
    the batch shape ``...`` and NaN propagates into them. With ``out`` (an array like ``h``)
    the negative residual ``f - h`` (the right-hand side of the Newton step) is written
    there in the same pass. Short series (under 1024 steps, where a parallel launch costs
    more than it saves) and a non-contiguous ``out`` take :func:`residual_norms_xp`."""
    if h.shape[-2] < 1024 or not (out is None or out.flags.c_contiguous):
        return residual_norms_xp(h, f, atol, rtol, out)
    batch = h.shape[:-2]
    hb = np.ascontiguousarray(h.reshape(-1, *h.shape[-2:]))
    fb = np.ascontiguousarray(f.reshape(-1, *f.shape[-2:]))
    B, T = hb.shape[0], hb.shape[1]
    C = -(-T // _STEPS)
    err = np.empty((B, C), dtype=np.float64)
    q = np.empty((B, C), dtype=np.float64)
    first = np.empty((B, C), dtype=np.int64)
    kernel = _residual_kernel if B * C > 1 else _residual_kernel_serial
    out = np.empty((0, 0, 0), dtype=hb.dtype) if out is None else out.reshape(B, T, -1)
    kernel(hb, fb, float(atol), float(rtol), err, q, first, out)
    return err.max(axis=1).reshape(batch), q.max(axis=1).reshape(batch), int(first.min())
