"""Chunk summaries of the blocked Numba scan (private; see :mod:`pitsolve.kernels.numba_scan`).

Phase 1 condenses a chunk into its affine summary: the end state ``e`` from a zero carry-in
and the transfer map ``phi = M_last ... M_first`` (``M`` = ``A_t`` forward, ``A_{t+1}^T``
reverse), so that the chunk maps a carry-in ``x`` to ``phi x + e``; phase 2 chains the
summaries (:func:`_combine`).  Same argument conventions as the chunk solves in
:mod:`pitsolve.kernels._numba_chunks` (whose performance notes hold here too).

Subnormal flush: ``phi`` entries below ``floor = tiny * 2**20`` in magnitude (``tiny`` the
dtype's smallest normal number) are set to zero: at every step for diagonal maps (one
compare-and-select per entry in the vectorised loop, no measurable cost), after every block
of ``_FLUSH_EVERY`` steps for dense ones (the last block ends the chunk).  For strongly
contracting maps the product would otherwise sink below ``tiny`` within a few hundred steps
and stay subnormal (the smallest subnormal times 0.99 rounds back to itself), and subnormal
arithmetic is slow: on the 2-core dev machine phase 1 ran 1.4-2x slower for diagonal maps
and ~1.5x for dense maps of diagonal matrices.  The flushed part of ``phi x`` is below
``2**-1002`` (float64) or ``2**-106`` (float32) times ``|x|``, far below the rounding error
of ``e`` unless the carry exceeds the chunk's end state by ``2**949`` (float64) or ``2**82``
(float32); and the unflushed product was no better (stuck at the smallest subnormal, it
overstates the true product).  ``|x| < floor`` is False for NaN, so NaN survives the flush
and propagates as in the plain loop.  The split scan stops correcting below the same floor.

Numba caches each function under its own module file and does not notice edits to the
modules it calls: after editing this module, remove the kernels' cache
(``pitsolve/kernels/__pycache__/numba_scan*.nb[ic]``).
"""

from __future__ import annotations

import numba
import numpy as np

from ._numba_chunks import _JIT, _dense_matvec, _dense_matvec_t

#: Flush threshold of the transfer maps, in units of the dtype's smallest normal number.
_FLOOR_SCALE = 2.0**20

#: Dense transfer maps are flushed after every block of this many steps (the last block
#: ends the chunk).
_FLUSH_EVERY = 64

# Below this state size the dense transfer-map product uses scalar dot
# products (no runtime alias checks / vector set-up per (i, k) pair, which
# cost ~4x at D = 4); from it on, the vectorised i, k, j loop order.
_SMALL_DENSE = 8


@numba.njit(**_JIT)
def _floor_zero(x):  # pragma: no cover - jitted
    """``(floor, zero)`` in the dtype of the array ``x``: ``floor = tiny * 2**20``."""
    f = x.dtype.type
    return f(np.finfo(x.dtype).tiny * _FLOOR_SCALE), f(0)


@numba.njit(**_JIT)
def _diag_end(Ab, Vb, ts, n, dt, ao, e, phi):  # pragma: no cover - jitted
    """Diagonal phase 1: ``e`` and ``phi`` of one chunk (see :func:`_end_chunk`); ``phi``
    entries below the floor are flushed to zero at every step (module docstring)."""
    D = Vb.shape[1]
    floor, zero = _floor_zero(phi)
    t = ts
    if D == 1:
        a = Ab[t + ao, 0]
        if abs(a) < floor:  # False for NaN: NaN survives
            a = zero
        h = Vb[t, 0]
        for _ in range(1, n):
            t += dt
            ak = Ab[t + ao, 0]
            h = ak * h + Vb[t, 0]
            a = ak * a
            if abs(a) < floor:
                a = zero
        e[0] = h
        phi[0] = a
        return
    for d in range(D):
        e[d] = Vb[t, d]
        p = Ab[t + ao, d]
        phi[d] = zero if abs(p) < floor else p
    for _ in range(1, n):
        t += dt
        ta = t + ao
        for d in range(D):
            ak = Ab[ta, d]
            e[d] = ak * e[d] + Vb[t, d]
            p = ak * phi[d]
            phi[d] = zero if abs(p) < floor else p


@numba.njit(**_JIT)
def _dense_end(Ab, Vb, ts, n, dt, ao, trans, e, phi):  # pragma: no cover - jitted
    """Dense phase 1: ``e`` and ``phi`` of one chunk (see :func:`_end_chunk`).

    Ping-pongs between the two rows of per-chunk scratch buffers ``eb``,
    ``pb``.  The map product ``pb[nxt] = op(A) @ pb[cur]`` uses scalar dot
    products below ``_SMALL_DENSE`` and the vectorised loop order i, k, j
    from it on.  Its entries below the floor are flushed to zero after every
    block of ``_FLUSH_EVERY`` steps (and in the first map), not at every step:
    a flush inside the product loops made phase 1 10-45 % slower at
    D = 4..16, a per-step test 10 % slower at D = 2..4 (measured); an entry
    flushed to zero stays zero unless other entries feed it.
    """
    D = Vb.shape[1]
    floor, zero = _floor_zero(phi)
    eb = np.empty((2, D), dtype=e.dtype)
    pb = np.empty((2, D, D), dtype=e.dtype)
    t = ts
    ta = t + ao
    for i in range(D):
        eb[0, i] = Vb[t, i]
        for j in range(D):
            p = Ab[ta, i, j] if trans is None else Ab[ta, j, i]
            pb[0, i, j] = zero if abs(p) < floor else p  # False for NaN: NaN survives
    small = D < _SMALL_DENSE
    cur = 0
    step = 1
    while step < n:
        end = min(n, step + _FLUSH_EVERY)
        for _ in range(step, end):
            t += dt
            ta = t + ao
            nxt = 1 - cur
            if trans is None:
                _dense_matvec(Ab, ta, eb, cur, Vb, t, eb, nxt)
            else:
                _dense_matvec_t(Ab, ta, eb, cur, Vb, t, eb, nxt)
            if small:
                for i in range(D):
                    for j in range(D):
                        a = Ab[ta, i, 0] if trans is None else Ab[ta, 0, i]
                        s = a * pb[cur, 0, j]
                        for k in range(1, D):
                            a = Ab[ta, i, k] if trans is None else Ab[ta, k, i]
                            s += a * pb[cur, k, j]
                        pb[nxt, i, j] = s
            else:
                for i in range(D):
                    a = Ab[ta, i, 0] if trans is None else Ab[ta, 0, i]
                    for j in range(D):
                        pb[nxt, i, j] = a * pb[cur, 0, j]
                    for k in range(1, D):
                        a = Ab[ta, i, k] if trans is None else Ab[ta, k, i]
                        for j in range(D):
                            pb[nxt, i, j] += a * pb[cur, k, j]
            cur = nxt
        for i in range(D):
            for j in range(D):
                p = pb[cur, i, j]
                pb[cur, i, j] = zero if abs(p) < floor else p
        step = end
    for i in range(D):
        e[i] = eb[cur, i]
        for j in range(D):
            phi[i, j] = pb[cur, i, j]


@numba.njit(**_JIT)
def _end_chunk(Ab, Vb, ts, n, dt, ao, trans, e, phi):  # pragma: no cover - jitted
    """Phase 1 of a chunk: end state ``e`` from a zero carry-in and the map ``phi``.

    Same conventions as ``_numba_chunks._solve_chunk``; writes only ``e`` (``(D,)``)
    and ``phi`` (``(D,)`` diagonal, ``(D, D)`` dense; the map applied to the
    carry-in, i.e. already transposed for the reverse scan).
    """
    if Ab.ndim == 2:
        _diag_end(Ab, Vb, ts, n, dt, ao, e, phi)
    else:
        _dense_end(Ab, Vb, ts, n, dt, ao, trans, e, phi)


@numba.njit(**_JIT)
def _combine(PHI, c, X, E, Y):  # pragma: no cover - jitted
    """Phase 2 step ``Y[c+1] = PHI[c] X[c] + E[c]`` (diagonal or dense ``PHI``)."""
    if PHI.ndim == 2:
        for d in range(Y.shape[1]):
            Y[c + 1, d] = PHI[c, d] * X[c, d] + E[c, d]
    else:
        _dense_matvec(PHI, c, X, c, E, c, Y, c + 1)
