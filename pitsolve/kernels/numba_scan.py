"""Numba CPU kernels for linear recurrences (parallel-in-time scans).

Forward scan (0-based time index ``t``)::

    h_0 = A_0 h0 + b_0,        h_t = A_t h_{t-1} + b_t

Reverse (transposed) scan, used by adjoints::

    lam_{T-1} = g_{T-1},       lam_t = g_t + A_{t+1}^T lam_{t+1}

``A`` is either diagonal, shape ``(B, T, D)`` (``A_t h`` is an elementwise
product and the transpose is the identity), or dense, shape ``(B, T, D, D)``
(``A_t h`` is ``A[t] @ h``).  ``b``/``g`` have shape ``(B, T, D)``, ``h0`` has
shape ``(B, D)``; the output has shape ``(B, T, D)`` and the inputs' dtype.
All arrays are expected C-contiguous with one common dtype (float32 or
float64); the caller validates inputs, these functions do not.

Blocked (three-phase) algorithm, see MATH.md.  Time is cut into
``C = ceil(T / chunk_size)`` chunks.  Chunks are numbered in *step order*:
chunk 0 holds the first ``chunk_size`` steps of the recurrence, i.e. the
first time indices for the forward scan and the *last* ones for the reverse
scan, so the reverse scan is the forward algorithm with time running
backwards (index arithmetic only, nothing is copied or transposed).

1. Per chunk in parallel (one ``prange`` over the flattened (batch, chunk)
   index): chunk 0 has a known carry-in (``h0`` forward, zero reverse) and is
   solved exactly, writing its outputs.  Chunks ``1 .. C-2`` run their
   recurrence from a zero carry-in and keep only the end state ``e_c`` and
   the transfer map ``Phi_c = M_last ... M_first`` (``M`` = ``A_t`` forward,
   ``A_{t+1}^T`` reverse).  Their outputs are *not* written: re-reading the
   inputs in phase 3 costs less memory traffic than write + correct.  The
   last chunk needs no phase 1 at all.
2. Per batch element in parallel, sequentially over chunks:
   ``carry_1 = (last output of chunk 0)``,
   ``carry_c = Phi_{c-1} carry_{c-1} + e_{c-1}``.
3. Per chunk ``c >= 1`` in parallel: re-run the recurrence from ``carry_c``
   and write the outputs.

The per-step arithmetic is shared by all paths (blocked, sequential, forward,
reverse, diagonal, dense): the helpers below branch on ``M.ndim`` (pruned at
compile time by Numba) and on a runtime ``trans`` flag that only the dense
inner loops look at.  No ``fastmath``: NaN/Inf propagate as in the plain loop,
and outputs written by phase 1 / the sequential kernels are bit-identical to a
plain loop that accumulates ``sum_k A[i, k] h[k]`` in ascending ``k`` and adds
``b`` last.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = [
    "default_chunk_size",
    "scan_blocked",
    "scan_blocked_reverse",
    "scan_sequential",
    "scan_sequential_reverse",
]

_JIT = {"cache": True, "nogil": True}
_IJIT = {"cache": True, "nogil": True, "inline": "always"}
_PJIT = {"cache": True, "nogil": True, "parallel": True}


# --------------------------------------------------------------------------
# Per-chunk helpers
#
# Performance notes (measured on the 2-core dev machine):
# * Numba never lets LLVM inline one jitted function into another; a call per
#   time step (~300 bytes of exploded array arguments, plus an atomic
#   incref/decref per array view) cost 15-50 ns/step.  So the time loops live
#   inside per-chunk functions, hot loops index whole arrays with explicit row
#   indices (no per-step views), and the only per-step helper is the dense
#   mat-vec, inlined in Numba IR (``inline="always"``, three call sites).
# * ``trans`` (dense transpose, i.e. reverse scan) must reach the inner loops
#   as a compile-time constant: as a runtime flag the dense step was ~10x
#   slower.  The kernel entry points pass it as a literal, so Numba
#   specialises on it.
# * ``ndim`` branches on *arguments* are pruned at compile time by Numba.
# --------------------------------------------------------------------------

# Below this state size the dense transfer-map product uses scalar dot
# products (no runtime alias checks / vector set-up per (i, k) pair, which
# cost ~4x at D = 4); from it on, the vectorised i, k, j loop order.
_SMALL_DENSE = 8


@numba.njit(**_IJIT)
def _dense_matvec(M3, m, X, xr, V, vr, Y, yr):  # pragma: no cover - jitted
    """Dense ``Y[yr] = M3[m] @ X[xr] + V[vr]`` (``Y[yr]`` must not alias ``X[xr]``).

    Rows are done four at a time with register accumulators (four
    independent chains in flight).  Every row accumulates ``M[i, k] x[k]`` in
    ascending ``k`` and adds ``v`` last, so all code paths (blocked,
    sequential) round identically.
    """
    D = Y.shape[1]
    x0 = X[xr, 0]
    i = 0
    while i + 4 <= D:
        s0 = M3[m, i, 0] * x0
        s1 = M3[m, i + 1, 0] * x0
        s2 = M3[m, i + 2, 0] * x0
        s3 = M3[m, i + 3, 0] * x0
        for k in range(1, D):
            xk = X[xr, k]
            s0 += M3[m, i, k] * xk
            s1 += M3[m, i + 1, k] * xk
            s2 += M3[m, i + 2, k] * xk
            s3 += M3[m, i + 3, k] * xk
        Y[yr, i] = s0 + V[vr, i]
        Y[yr, i + 1] = s1 + V[vr, i + 1]
        Y[yr, i + 2] = s2 + V[vr, i + 2]
        Y[yr, i + 3] = s3 + V[vr, i + 3]
        i += 4
    while i < D:
        s = M3[m, i, 0] * x0
        for k in range(1, D):
            s += M3[m, i, k] * X[xr, k]
        Y[yr, i] = s + V[vr, i]
        i += 1


@numba.njit(**_IJIT)
def _dense_matvec_t(M3, m, X, xr, V, vr, Y, yr):  # pragma: no cover - jitted
    """Transposed twin of :func:`_dense_matvec`: ``Y[yr] = M3[m]^T @ X[xr] + V[vr]``."""
    D = Y.shape[1]
    x0 = X[xr, 0]
    i = 0
    while i + 4 <= D:
        s0 = M3[m, 0, i] * x0
        s1 = M3[m, 0, i + 1] * x0
        s2 = M3[m, 0, i + 2] * x0
        s3 = M3[m, 0, i + 3] * x0
        for k in range(1, D):
            xk = X[xr, k]
            s0 += M3[m, k, i] * xk
            s1 += M3[m, k, i + 1] * xk
            s2 += M3[m, k, i + 2] * xk
            s3 += M3[m, k, i + 3] * xk
        Y[yr, i] = s0 + V[vr, i]
        Y[yr, i + 1] = s1 + V[vr, i + 1]
        Y[yr, i + 2] = s2 + V[vr, i + 2]
        Y[yr, i + 3] = s3 + V[vr, i + 3]
        i += 4
    while i < D:
        s = M3[m, 0, i] * x0
        for k in range(1, D):
            s += M3[m, k, i] * X[xr, k]
        Y[yr, i] = s + V[vr, i]
        i += 1


@numba.njit(**_JIT)
def _diag_solve(Ab, Vb, Ob, X, xr, ts, n, dt, ao, zero_carry):  # pragma: no cover - jitted
    D = Vb.shape[1]
    t = ts
    if D == 1:
        # Scalar recurrence: keep the state in a register.
        h = Vb[t, 0] if zero_carry else Ab[t + ao, 0] * X[xr, 0] + Vb[t, 0]
        Ob[t, 0] = h
        for _ in range(1, n):
            t += dt
            h = Ab[t + ao, 0] * h + Vb[t, 0]
            Ob[t, 0] = h
        return
    if zero_carry:
        for d in range(D):
            Ob[t, d] = Vb[t, d]
    else:
        ta = t + ao
        for d in range(D):
            Ob[t, d] = Ab[ta, d] * X[xr, d] + Vb[t, d]
    for _ in range(1, n):
        tp = t
        t += dt
        ta = t + ao
        for d in range(D):
            Ob[t, d] = Ab[ta, d] * Ob[tp, d] + Vb[t, d]


@numba.njit(**_JIT)
def _dense_solve(Ab, Vb, Ob, X, xr, ts, n, dt, ao, trans, zero_carry):  # pragma: no cover
    D = Vb.shape[1]
    t = ts
    if zero_carry:
        for d in range(D):
            Ob[t, d] = Vb[t, d]
        P = Ob
        pr = t
        t += dt
        n -= 1
    else:
        P = X
        pr = xr
    for _ in range(n):
        if trans:
            _dense_matvec_t(Ab, t + ao, P, pr, Vb, t, Ob, t)
        else:
            _dense_matvec(Ab, t + ao, P, pr, Vb, t, Ob, t)
        P = Ob
        pr = t
        t += dt


@numba.njit(**_JIT)
def _diag_end(Ab, Vb, ts, n, dt, ao, e, phi):  # pragma: no cover - jitted
    D = Vb.shape[1]
    t = ts
    if D == 1:
        a = Ab[t + ao, 0]
        h = Vb[t, 0]
        for _ in range(1, n):
            t += dt
            ak = Ab[t + ao, 0]
            h = ak * h + Vb[t, 0]
            a = ak * a
        e[0] = h
        phi[0] = a
        return
    for d in range(D):
        e[d] = Vb[t, d]
        phi[d] = Ab[t + ao, d]
    for _ in range(1, n):
        t += dt
        ta = t + ao
        for d in range(D):
            ak = Ab[ta, d]
            e[d] = ak * e[d] + Vb[t, d]
            phi[d] = ak * phi[d]


@numba.njit(**_JIT)
def _dense_end(Ab, Vb, ts, n, dt, ao, trans, e, phi):  # pragma: no cover - jitted
    """Dense phase 1: ``e`` and ``phi`` of one chunk (see :func:`_end_chunk`).

    Ping-pongs between the two rows of per-chunk scratch buffers ``eb``,
    ``pb``.  The map product ``pb[nxt] = op(A) @ pb[cur]`` uses scalar dot
    products below ``_SMALL_DENSE`` and the vectorised loop order i, k, j
    from it on.
    """
    D = Vb.shape[1]
    eb = np.empty((2, D), dtype=e.dtype)
    pb = np.empty((2, D, D), dtype=e.dtype)
    t = ts
    ta = t + ao
    for i in range(D):
        eb[0, i] = Vb[t, i]
        for j in range(D):
            pb[0, i, j] = Ab[ta, j, i] if trans else Ab[ta, i, j]
    small = D < _SMALL_DENSE
    cur = 0
    for _ in range(1, n):
        t += dt
        ta = t + ao
        nxt = 1 - cur
        if trans:
            _dense_matvec_t(Ab, ta, eb, cur, Vb, t, eb, nxt)
        else:
            _dense_matvec(Ab, ta, eb, cur, Vb, t, eb, nxt)
        if small:
            for i in range(D):
                for j in range(D):
                    a = Ab[ta, 0, i] if trans else Ab[ta, i, 0]
                    s = a * pb[cur, 0, j]
                    for k in range(1, D):
                        a = Ab[ta, k, i] if trans else Ab[ta, i, k]
                        s += a * pb[cur, k, j]
                    pb[nxt, i, j] = s
        else:
            for i in range(D):
                a = Ab[ta, 0, i] if trans else Ab[ta, i, 0]
                for j in range(D):
                    pb[nxt, i, j] = a * pb[cur, 0, j]
                for k in range(1, D):
                    a = Ab[ta, k, i] if trans else Ab[ta, i, k]
                    for j in range(D):
                        pb[nxt, i, j] += a * pb[cur, k, j]
        cur = nxt
    for i in range(D):
        e[i] = eb[cur, i]
        for j in range(D):
            phi[i, j] = pb[cur, i, j]


@numba.njit(**_JIT)
def _solve_chunk(Ab, Vb, Ob, X, xr, ts, n, dt, ao, trans, zero_carry):  # pragma: no cover
    """Run ``n`` steps of one batch element from the carry ``X[xr]``, writing ``Ob``.

    ``Ab``/``Vb``/``Ob`` are the batch element's ``A``/``V``/``out``
    (``(T, D)`` or ``(T, D, D)`` for ``Ab``).  Step ``j`` touches time index
    ``t = ts + j*dt`` of ``Vb``/``Ob`` and ``t + ao`` of ``Ab``.  With
    ``zero_carry`` the carry-in is zero and the first step is just ``Vb[t]``
    (``Ab`` is not read there: the reverse scan's first step would read
    ``A_T``).
    """
    if Ab.ndim == 2:
        _diag_solve(Ab, Vb, Ob, X, xr, ts, n, dt, ao, zero_carry)
    else:
        _dense_solve(Ab, Vb, Ob, X, xr, ts, n, dt, ao, trans, zero_carry)


@numba.njit(**_JIT)
def _end_chunk(Ab, Vb, ts, n, dt, ao, trans, e, phi):  # pragma: no cover - jitted
    """Phase 1 of a chunk: end state ``e`` from a zero carry-in and the map ``phi``.

    Same conventions as :func:`_solve_chunk`; writes only ``e`` (``(D,)``)
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


# --------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------


@numba.njit(**_PJIT)
def _blocked_kernel(A, V, h0, out, cs, reverse, E, PHI, CARRY):  # pragma: no cover
    """Three-phase blocked scan; ``reverse`` selects the transposed backward scan.

    ``E``/``CARRY``: ``(B, C, D)``; ``PHI``: ``(B, C) + A.shape[2:]``.
    ``h0`` is ignored (zero carry-in) when ``reverse``.
    """
    B = V.shape[0]
    T = V.shape[1]
    C = (T + cs - 1) // cs
    if reverse:
        dt = -1
        ao = 1
        first = T - 1
    else:
        dt = 1
        ao = 0
        first = 0

    # Phase 1: chunk 0 exactly, chunks 1..C-2 end state + transfer map.
    n1 = max(C - 1, 1)
    for task in numba.prange(B * n1):
        bi = task // n1
        c = task - bi * n1
        ts = first + c * cs * dt
        n = min(cs, T - c * cs)
        if c == 0:
            if A.ndim == 3:
                _diag_solve(A[bi], V[bi], out[bi], h0, bi, ts, n, dt, ao, reverse)
            else:
                _dense_solve(A[bi], V[bi], out[bi], h0, bi, ts, n, dt, ao, reverse, reverse)
        elif A.ndim == 3:
            _diag_end(A[bi], V[bi], ts, n, dt, ao, E[bi, c], PHI[bi, c])
        else:
            _dense_end(A[bi], V[bi], ts, n, dt, ao, reverse, E[bi, c], PHI[bi, c])
    if C < 2:
        return

    # Phase 2: carries, sequential over chunks.
    for bi in numba.prange(B):
        tl = first + (cs - 1) * dt
        for d in range(V.shape[2]):
            CARRY[bi, 1, d] = out[bi, tl, d]
        for c in range(2, C):
            _combine(PHI[bi], c - 1, CARRY[bi], E[bi], CARRY[bi])

    # Phase 3: chunks 1..C-1 from their carries.
    n3 = C - 1
    for task in numba.prange(B * n3):
        bi = task // n3
        c = task - bi * n3 + 1
        ts = first + c * cs * dt
        n = min(cs, T - c * cs)
        if A.ndim == 3:
            _diag_solve(A[bi], V[bi], out[bi], CARRY[bi], c, ts, n, dt, ao, False)
        else:
            _dense_solve(A[bi], V[bi], out[bi], CARRY[bi], c, ts, n, dt, ao, reverse, False)


# ``reverse`` doubles as the dense ``trans`` flag of the inner loops, which
# must be a compile-time constant.  These entry points pass it as a literal,
# so Numba specialises ``_blocked_kernel`` and the helpers on it.  (Not
# ``numba.literally``: that sends every call from Python through the slow
# compile-and-retry dispatch path, ~50 ms per call.)
@numba.njit(**_JIT)
def _blocked_forward(A, V, h0, out, cs, E, PHI, CARRY):  # pragma: no cover - jitted
    _blocked_kernel(A, V, h0, out, cs, False, E, PHI, CARRY)


@numba.njit(**_JIT)
def _blocked_reverse(A, V, h0, out, cs, E, PHI, CARRY):  # pragma: no cover - jitted
    _blocked_kernel(A, V, h0, out, cs, True, E, PHI, CARRY)


@numba.njit(**_JIT)
def _sequential_kernel(A, V, h0, out, reverse):  # pragma: no cover - jitted
    B = V.shape[0]
    T = V.shape[1]
    if reverse:
        for bi in range(B):
            _solve_chunk(A[bi], V[bi], out[bi], h0, bi, T - 1, T, -1, 1, True, True)
    else:
        for bi in range(B):
            _solve_chunk(A[bi], V[bi], out[bi], h0, bi, 0, T, 1, 0, False, False)


# --------------------------------------------------------------------------
# Public wrappers
# --------------------------------------------------------------------------


def default_chunk_size(T, B, n_threads=None, *, D=1, dense=False):
    """Chunk length used by :func:`scan_blocked` when ``chunk_size`` is None.

    ``n_threads`` defaults to ``numba.get_num_threads()``.  ``D``/``dense``
    (optional, keyword-only) describe the state so that tiny problems and
    expensive dense transfer maps can fall back to one chunk (sequential per
    batch element).  Returning ``T`` means one chunk per batch element.

    Heuristic (measured on a 2-core AMD EPYC, float64, B=1; see
    ``benchmarks/scan.py``):

    * ``n_threads == 1``, ``B >= 2 * n_threads`` or ``B`` a multiple of
      ``n_threads``: the batch alone keeps every thread busy; splitting time
      only adds the second pass over the inputs -> ``T``.
    * otherwise ``C = n_threads + 1`` chunks: phases 1 and 3 then both have
      exactly ``B * n_threads`` equal tasks (Numba's static ``prange``
      schedule gives each thread the same number), and the fraction of steps
      that are read twice, ``(C - 2) / C``, is as small as it can be.
      TODO(measured numbers are in the module body below).
    """
    if n_threads is None:
        n_threads = numba.get_num_threads()
    T = int(T)
    B = int(B)
    n_threads = int(n_threads)
    if T <= 1 or n_threads <= 1 or B >= 2 * n_threads or (B > 0 and B % n_threads == 0):
        return max(T, 1)
    C = n_threads + 1
    return max(1, -(-T // C))


def _chunks(T, chunk_size):
    return -(-T // chunk_size)


def _as_diagonal_if_scalar(A):
    """A dense ``(B, T, 1, 1)`` map is a diagonal one: use the (faster) diagonal kernels."""
    if A.ndim == 4 and A.shape[2] == 1 and A.shape[3] == 1:
        return A.reshape(A.shape[:3])
    return A


def _run_blocked(A, V, h0, chunk_size, reverse):
    A = _as_diagonal_if_scalar(A)
    B, T, D = V.shape
    out = np.empty(V.shape, dtype=V.dtype)
    if B == 0 or T == 0:
        return out
    dense = A.ndim == 4
    if chunk_size is None:
        chunk_size = default_chunk_size(T, B, D=D, dense=dense)
    cs = max(1, min(int(chunk_size), T))
    C = _chunks(T, cs)
    if C >= 2:
        E = np.empty((B, C, D), dtype=V.dtype)
        PHI = np.empty((B, C, *A.shape[2:]), dtype=V.dtype)
        CARRY = np.empty((B, C, D), dtype=V.dtype)
    else:
        E = np.empty((B, 1, D), dtype=V.dtype)
        PHI = np.empty((B, 1, *A.shape[2:]), dtype=V.dtype)
        CARRY = E
    kernel = _blocked_reverse if reverse else _blocked_forward
    kernel(A, V, h0, out, cs, E, PHI, CARRY)
    return out


def scan_blocked(A, b, h0, *, chunk_size=None):
    """Forward scan ``h_t = A_t h_{t-1} + b_t`` (``h_{-1} = h0``), blocked over time.

    ``A``: ``(B, T, D)`` diagonal or ``(B, T, D, D)`` dense; ``b``: ``(B, T, D)``;
    ``h0``: ``(B, D)``.  Returns ``h`` of shape ``(B, T, D)``.  ``chunk_size``
    defaults to :func:`default_chunk_size`.
    """
    return _run_blocked(A, b, h0, chunk_size, False)


def scan_blocked_reverse(A, g, *, chunk_size=None):
    """Reverse scan ``lam_{T-1} = g_{T-1}``, ``lam_t = g_t + A_{t+1}^T lam_{t+1}``.

    Same shapes as :func:`scan_blocked` (``g`` in place of ``b``, no ``h0``;
    ``A_0`` is never read).  Returns ``lam`` of shape ``(B, T, D)``.
    """
    B, _, D = g.shape
    return _run_blocked(A, g, np.zeros((B, D), dtype=g.dtype), chunk_size, True)


def scan_sequential(A, b, h0):
    """Forward scan as a plain sequential loop over time (parallel over nothing)."""
    out = np.empty(b.shape, dtype=b.dtype)
    if out.size:
        _sequential_kernel(_as_diagonal_if_scalar(A), b, h0, out, False)
    return out


def scan_sequential_reverse(A, g):
    """Reverse (transposed) scan as a plain sequential loop over time."""
    B, _, D = g.shape
    out = np.empty(g.shape, dtype=g.dtype)
    if out.size:
        _sequential_kernel(_as_diagonal_if_scalar(A), g, np.zeros((B, D), dtype=g.dtype), out, True)
    return out
