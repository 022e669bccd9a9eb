r"""The DEER convergence test in one pass: residual norms of a trajectory guess.

For a guess :math:`h` and :math:`f_t = f(h_{t-1})`, per batch element b and step t,

.. math::

    e_{b,t} = \|h_{b,t} - f_{b,t}\|_\infty,\qquad
    q_{b,t} = \frac{e_{b,t}}{\mathrm{atol} + \mathrm{rtol}\,\|h_{b,t}\|_\infty}.

:func:`residual_norms` returns :math:`\max_t e_{b,t}`, :math:`\max_t q_{b,t}` and the first t at
which any batch element has :math:`q_{b,t} > 1` (the end of the converged prefix). The NumPy
version is the reference; the Numba version fuses the passes (the test runs every iteration,
so on a CPU it is worth one pass instead of six).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from ..backends import array_namespace

__all__ = ["residual_norms"]


def _residual_norms_xp(h: Any, f: Any, atol: float, rtol: float) -> tuple[Any, Any, int]:
    xp = array_namespace(h, f)
    rn = xp.abs(h - f).max(axis=-1)
    ratio = rn / (atol + rtol * xp.abs(h).max(axis=-1))
    bad = (~(ratio <= 1)).reshape(-1, ratio.shape[-1]).any(axis=0)  # NaN counts as bad
    first = int(xp.argmax(bad)) if bool(bad.any()) else int(bad.shape[0])
    return rn.max(axis=-1), ratio.max(axis=-1), first


@numba.njit(cache=True, nogil=True, inline="always")
def _residual_row(h, f, atol, rtol, err, q, first, b):  # pragma: no cover - jitted
    """The norms of batch element ``b``."""
    T, D = h.shape[1], h.shape[2]
    e_max = 0.0
    q_max = 0.0
    fb = T
    for t in range(T):
        e = 0.0
        s = 0.0
        for d in range(D):
            r = abs(h[b, t, d] - f[b, t, d])
            a = abs(h[b, t, d])
            # NaN must win: comparisons with NaN are False, so test it explicitly
            if r > e or r != r:
                e = r
            if a > s or a != a:
                s = a
        ratio = e / (atol + rtol * s)
        if e > e_max or e != e:
            e_max = e
        if ratio > q_max or ratio != ratio:
            q_max = ratio
        if fb == T and not ratio <= 1.0:
            fb = t
    err[b] = e_max
    q[b] = q_max
    first[b] = fb


@numba.njit(cache=True, nogil=True, parallel=True)
def _residual_kernel(h, f, atol, rtol, err, q, first):  # pragma: no cover - jitted
    for b in numba.prange(h.shape[0]):
        _residual_row(h, f, atol, rtol, err, q, first, b)


@numba.njit(cache=True, nogil=True)
def _residual_kernel_serial(h, f, atol, rtol, err, q, first):  # pragma: no cover - jitted
    """One batch element: no parallel region to start (and wait for on a busy machine)."""
    for b in range(h.shape[0]):
        _residual_row(h, f, atol, rtol, err, q, first, b)


def residual_norms(h: Any, f: Any, atol: float, rtol: float) -> tuple[Any, Any, int]:
    """``(max_t e, max_t q, first bad t)`` for arrays ``(..., T, D)``; the first two have the
    batch shape ``...`` and NaN propagates into them."""
    if array_namespace(h, f) is not np or h.shape[-2] < 1024:
        return _residual_norms_xp(h, f, atol, rtol)
    batch = h.shape[:-2]
    hb = np.ascontiguousarray(h.reshape(-1, *h.shape[-2:]))
    fb = np.ascontiguousarray(f.reshape(-1, *f.shape[-2:]))
    B = hb.shape[0]
    err = np.empty(B, dtype=np.float64)
    q = np.empty(B, dtype=np.float64)
    first = np.empty(B, dtype=np.int64)
    kernel = _residual_kernel if B > 1 else _residual_kernel_serial
    kernel(hb, fb, float(atol), float(rtol), err, q, first)
    return err.reshape(batch), q.reshape(batch), int(first.min())
