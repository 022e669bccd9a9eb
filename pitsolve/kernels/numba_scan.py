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

Split algorithm, for dense maps of fewer series than threads when ``chunk_size`` is left to
the default (the blocked algorithm's transfer-map products cost ~5 steps per step, more than
two threads win back).  One chunk per thread:

1. Per chunk in parallel: chunk 0 from its carry-in, the others from a zero carry-in, all
   writing their outputs ("local" solutions).
2. Per batch element, chunk after chunk: the exact carry ``e`` (the last output of the chunk
   before) propagates as ``e <- op(A_t) e`` and is added to the outputs, until it is
   negligible: below ``2**-100`` times the output (``2**47`` times less than the rounding
   error of the loop at that step, which later steps amplify alike) or below
   ``tiny * 2**20`` (no subnormal arithmetic).  For contracting maps that takes a few
   hundred to a few thousand steps; otherwise phase 2 runs to the chunk's end and the scan
   costs about what the loop costs.

Module layout: the per-chunk solves (the recurrence over one chunk from a
carry-in, writing outputs) are in ``_numba_chunks``, the blocked scan's chunk
summaries (phase 1: end state and transfer map; phase 2: the carry combine)
in ``_numba_summaries``; this module holds the kernels (blocked, split,
sequential), the chunk-size cost model and the public wrappers.  Forward and
reverse differ only in the time direction ``dt``, the ``A`` index offset
``ao`` and the dense transpose flag ``trans``; diagonal and dense are chosen
by ``ndim`` (pruned at compile time).  The sequential kernels are the blocked
kernel's chunk-0 solve over the whole series.  No ``fastmath``: NaN/Inf
propagate as in the plain loop, and every output written from a known carry
(sequential kernels, chunk 0) is bit-identical to a plain loop that
accumulates ``sum_k op(A)[i, k] h[k]`` in ascending ``k`` and adds ``b``
last; phase-3 outputs differ from it only by the rounding of their carry-in.

Subnormal flush: transfer-map entries below ``tiny * 2**20`` in magnitude
(``tiny`` the dtype's smallest normal number) are flushed to zero in phase 1,
at every step (diagonal) or after every block of 64 steps (dense; see
``_numba_summaries``): the products of strongly contracting maps would
otherwise sit in slow subnormal arithmetic.  NaN is never flushed.
"""

from __future__ import annotations

import numba
import numpy as np

from ._numba_chunks import (
    _IJIT,
    _JIT,
    _dense_matvec,
    _dense_matvec_t,
    _dense_solve,
    _diag_solve,
    _solve_chunk,
)
from ._numba_summaries import _FLOOR_SCALE, _combine, _dense_end, _diag_end

__all__ = [
    "default_chunk_size",
    "scan_blocked",
    "scan_blocked_reverse",
    "scan_sequential",
    "scan_sequential_reverse",
]

_PJIT = {"cache": True, "nogil": True, "parallel": True}


# --------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------


@numba.njit(**_IJIT)
def _direction(trans, T):  # pragma: no cover - jitted
    """``(dt, ao, first)``: time step, offset of the ``A`` index and first time index of the
    forward (``trans is None``) or the reverse scan."""
    if trans is None:
        return 1, 0, 0
    return -1, 1, T - 1


@numba.njit(**_PJIT)
def _blocked_kernel(A, V, h0, out, cs, trans, E, PHI, CARRY):  # pragma: no cover
    """Three-phase blocked scan: forward if ``trans is None``, else the reverse scan.

    ``E``/``CARRY``: ``(B, C, D)``; ``PHI``: ``(B, C) + A.shape[2:]``.
    ``h0`` is ignored (zero carry-in) for the reverse scan.
    """
    B = V.shape[0]
    T = V.shape[1]
    C = (T + cs - 1) // cs
    dt, ao, first = _direction(trans, T)
    # Runtime bools (not literals), so that phases 1 and 3 share one
    # specialisation of the solve helpers (each costs compile time).
    zero_carry = trans is not None
    nonzero = cs < 0  # False

    # Phase 1: chunk 0 exactly, chunks 1..C-2 end state + transfer map.
    n1 = max(C - 1, 1)
    for task in numba.prange(B * n1):
        bi = task // n1
        c = task - bi * n1
        ts = first + c * cs * dt
        n = min(cs, T - c * cs)
        if c == 0:
            if A.ndim == 3:
                _diag_solve(A[bi], V[bi], out[bi], h0, bi, ts, n, dt, ao, zero_carry)
            else:
                _dense_solve(A[bi], V[bi], out[bi], h0, bi, ts, n, dt, ao, trans, zero_carry)
        elif A.ndim == 3:
            _diag_end(A[bi], V[bi], ts, n, dt, ao, E[bi, c], PHI[bi, c])
        else:
            _dense_end(A[bi], V[bi], ts, n, dt, ao, trans, E[bi, c], PHI[bi, c])
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
            _diag_solve(A[bi], V[bi], out[bi], CARRY[bi], c, ts, n, dt, ao, nonzero)
        else:
            _dense_solve(A[bi], V[bi], out[bi], CARRY[bi], c, ts, n, dt, ao, trans, nonzero)


# One entry point per direction: ``trans`` (``None`` forward, ``True``
# reverse) is a compile-time constant inside (see the notes above).  Not
# ``numba.literally``: that sends every call from Python through the slow
# compile-and-retry dispatch path (~50 ms per call).
@numba.njit(**_JIT)
def _blocked_forward(A, V, h0, out, cs, E, PHI, CARRY):  # pragma: no cover - jitted
    _blocked_kernel(A, V, h0, out, cs, None, E, PHI, CARRY)


@numba.njit(**_JIT)
def _blocked_reverse(A, V, h0, out, cs, E, PHI, CARRY):  # pragma: no cover - jitted
    _blocked_kernel(A, V, h0, out, cs, True, E, PHI, CARRY)


@numba.njit(**_JIT)
def _dense_correct(Ab, Ob, W, Z, tc, ts, n, dt, ao, trans, floor):  # pragma: no cover
    """Add the carry's effect to a chunk solved from a zero carry-in: ``e = Ob[tc]`` (the
    exact last output of the chunk before), then per step ``e = op(A) e`` and
    ``Ob[t] += e``, until e is negligible (:func:`_run_blocked`). ``W (2, D)`` scratch,
    ``Z (1, D)`` zeros. Returns the steps corrected."""
    D = Ob.shape[1]
    for d in range(D):
        W[0, d] = Ob[tc, d]
    t = ts
    for j in range(n):
        if trans is None:
            _dense_matvec(Ab, t + ao, W, 0, Z, 0, W, 1)
        else:
            _dense_matvec_t(Ab, t + ao, W, 0, Z, 0, W, 1)
        e = 0.0
        h = 0.0
        for d in range(D):
            y = W[1, d]
            W[0, d] = y
            x = Ob[t, d] + y
            Ob[t, d] = x
            if not abs(y) <= e:  # NaN wins
                e = abs(y)
            h = max(h, abs(x))
        if e <= _NEGLIGIBLE * h or e <= floor:
            return j + 1
        t += dt
    return n


@numba.njit(**_PJIT)
def _split_kernel(A, V, h0, out, cs, trans, W, Z, floor, steps):  # pragma: no cover
    """Dense scan in ``C`` chunks: chunk 0 from its carry-in and the others from a zero
    carry-in, all in parallel; then, chunk after chunk, the carry's decaying effect."""
    B = V.shape[0]
    T = V.shape[1]
    C = (T + cs - 1) // cs
    dt, ao, first = _direction(trans, T)
    for task in numba.prange(B * C):
        bi = task // C
        c = task - bi * C
        ts = first + c * cs * dt
        n = min(cs, T - c * cs)
        zero_carry = c > 0 or trans is not None  # (the reverse scan starts from zero)
        _dense_solve(A[bi], V[bi], out[bi], h0, bi, ts, n, dt, ao, trans, zero_carry)
    for bi in numba.prange(B):
        for c in range(1, C):
            ts = first + c * cs * dt
            n = min(cs, T - c * cs)
            steps[bi, c] = _dense_correct(
                A[bi], out[bi], W[bi], Z, ts - dt, ts, n, dt, ao, trans, floor
            )


@numba.njit(**_JIT)
def _split_forward(A, V, h0, out, cs, W, Z, floor, steps):  # pragma: no cover - jitted
    _split_kernel(A, V, h0, out, cs, None, W, Z, floor, steps)


@numba.njit(**_JIT)
def _split_reverse(A, V, h0, out, cs, W, Z, floor, steps):  # pragma: no cover - jitted
    _split_kernel(A, V, h0, out, cs, True, W, Z, floor, steps)


@numba.njit(**_JIT)
def _sequential_forward(A, V, h0, out):  # pragma: no cover - jitted
    for bi in range(V.shape[0]):
        _solve_chunk(A[bi], V[bi], out[bi], h0, bi, 0, V.shape[1], 1, 0, None, False)


@numba.njit(**_JIT)
def _sequential_reverse(A, V, h0, out):  # pragma: no cover - jitted
    T = V.shape[1]
    for bi in range(V.shape[0]):
        _solve_chunk(A[bi], V[bi], out[bi], h0, bi, T - 1, T, -1, 1, True, True)


def _sequential_kernel(A, V, h0, out, reverse):
    (_sequential_reverse if reverse else _sequential_forward)(A, V, h0, out)


@numba.njit(**_PJIT)
def _batch_forward(A, V, h0, out):  # pragma: no cover - jitted
    """One sequential scan per batch element, the elements in parallel: the blocked scan
    with one chunk, in one parallel loop (which compiles in a third of its time)."""
    for b in numba.prange(V.shape[0]):
        bi = np.int64(b)  # (the parallel loop's index is unsigned: one signature of the callee)
        _solve_chunk(A[bi], V[bi], out[bi], h0, bi, 0, V.shape[1], 1, 0, None, False)


@numba.njit(**_PJIT)
def _batch_reverse(A, V, h0, out):  # pragma: no cover - jitted
    """The reverse scans of :func:`_batch_forward`."""
    T = V.shape[1]
    for b in numba.prange(V.shape[0]):
        bi = np.int64(b)
        _solve_chunk(A[bi], V[bi], out[bi], h0, bi, T - 1, T, -1, 1, True, True)


# --------------------------------------------------------------------------
# Public wrappers
# --------------------------------------------------------------------------


# Cost of one phase-1 step (end state + transfer map, nothing written)
# relative to one solve step (measured single-threaded, float64, 2-core AMD
# EPYC): diagonal ~1 (both stream A and b once); dense ~4.5-5 for D <= 8,
# 5-6 for D = 12..16, ~10 for D = 32..64 (the map product is O(D^3) per step,
# the mat-vec O(D^2)).
def _phase1_cost(D, dense):
    if not dense:
        return 1.0
    return 5.0 if D <= 16 else 10.0


# Below this much work (B*T*D diagonal, B*T*D^2 dense) the three parallel
# launches (~10 us) cost more than they save: the measured crossover was
# T*D ~ 5e3 (D = 1) to ~2e4 (D = 64); 2e4 errs on the side of not waking
# threads for a ~20 us problem.
_MIN_PARALLEL_WORK = 20_000


def default_chunk_size(T, B, n_threads=None, *, D=1, dense=False):
    """Chunk length used by :func:`scan_blocked` when ``chunk_size`` is None.

    ``n_threads`` defaults to ``numba.get_num_threads()``.  ``D`` and
    ``dense`` (optional, keyword-only; :func:`scan_blocked` passes them)
    describe the state; the defaults describe a scalar diagonal recurrence.
    Returning ``T`` means one chunk per batch element (no time split).

    * ``n_threads == 1`` or ``B >= 2 * n_threads``: ``T`` (the batch alone
      keeps the threads busy; splitting time only adds work).
    * Tiny problems (``B*T*D`` resp. ``B*T*D^2`` below 2e4): ``T``.
    * Otherwise a cost model picks the number of chunks ``C``: with Numba's
      static ``prange`` schedule each phase costs ``ceil(tasks / n_threads)``
      chunk lengths, phase 1 at ``r`` times the per-step cost of phase 3
      (``r ~ 1`` diagonal, ~5-10 dense), so
      ``cost(C) = ceil(B (C-1) / n) * ceil(T / C) * (1 + r)`` against
      ``ceil(B / n) * T`` for ``C = 1``; the blocked scan must win by 10 %
      (it streams the inputs twice).  For ``B = 1`` this gives
      ``C = n_threads + 1``: both parallel phases then have exactly
      ``n_threads`` equal tasks and the share of steps read twice,
      ``(C - 2) / C``, is smallest.  Dense maps need ``n_threads > r``, so on
      2 threads dense scans run unsplit.

    Measured on the 2-core dev machine (diagonal, float64, median ms for
    C = 1 (unsplit) / 3 / 5 / 9 / 17 chunks)::

        B=1 T=1e5 D=1 :  0.163 /  0.112 /  0.133 /  0.149 /  0.156
        B=1 T=1e6 D=1 :  1.665 /  1.096 /  1.294 /  1.445 /  1.550
        B=1 T=1e6 D=4 :  4.354 /  3.070 /  6.784 /  3.985 /  4.446
        B=1 T=1e6 D=16: 17.131 / 14.690 / 15.579 / 16.272 / 21.794
        B=1 T=1e6 D=64: 74.755 / 56.310 / 56.496 / 60.869 / 62.373
        B=3 T=1e6 D=1 :  3.368 /  3.295 /  3.975 /  4.523 /  4.719
        B=3 T=1e6 D=16: 36.361 / 39.258 / 35.320 / 42.683 / 38.576

    ``C = n_threads + 1 = 3`` was fastest for ``B = 1`` everywhere (more
    chunks only add re-read traffic; the large-D cases are bound by memory
    bandwidth, which a second core raises only ~1.5x here), and for ``B = 3``
    splitting time gains nothing over one chunk per batch element, as the
    model predicts.
    """
    n = numba.get_num_threads() if n_threads is None else int(n_threads)
    T = int(T)
    B = int(B)
    D = int(D)
    if T <= 2 or n <= 1 or B >= 2 * n:
        return max(T, 1)
    if B * T * (D * D if dense else D) < _MIN_PARALLEL_WORK:
        return T
    r = _phase1_cost(D, dense)
    best_C = 1
    best = 0.9 * (-(-B // n)) * T
    for C in range(2, min(T, 4 * n + 1) + 1):
        cost = (-(-(B * (C - 1)) // n)) * (-(-T // C)) * (1.0 + r)
        if cost < best:
            best_C, best = C, cost
    return T if best_C == 1 else -(-T // best_C)


def _chunks(T, chunk_size):
    return -(-T // chunk_size)


def _as_diagonal_if_scalar(A):
    """A dense ``(B, T, 1, 1)`` map is a diagonal one: use the (faster) diagonal kernels."""
    if A.ndim == 4 and A.shape[2] == 1 and A.shape[3] == 1:
        return A.reshape(A.shape[:3])
    return A


#: The split scan stops correcting a chunk once the carry's effect is below this fraction of
#: the output (or below ``tiny * 2**20``, short of subnormal numbers): 2^47 times less than
#: the rounding error the plain loop makes at that step, which later steps amplify alike.
_NEGLIGIBLE = 2.0**-100


def _run_split(A, V, h0, out, reverse):
    """The split scan (module docstring) of a dense ``(B, T, D, D)`` map, one chunk per
    thread; returns ``out``."""
    B, T, D = V.shape
    n = numba.get_num_threads()
    cs = -(-T // n)
    W = np.empty((B, 2, D), dtype=V.dtype)
    Z = np.zeros((1, D), dtype=V.dtype)
    steps = np.zeros((B, _chunks(T, cs)), dtype=np.int64)
    floor = float(np.finfo(V.dtype).tiny) * _FLOOR_SCALE
    (_split_reverse if reverse else _split_forward)(A, V, h0, out, cs, W, Z, floor, steps)
    return out


def _run_blocked(A, V, h0, chunk_size, reverse):
    A = _as_diagonal_if_scalar(A)
    B, T, D = V.shape
    out = np.empty(V.shape, dtype=V.dtype)
    if B == 0 or T == 0:
        return out
    dense = A.ndim == 4
    split = chunk_size is None  # dense maps then take the split scan where it pays
    if chunk_size is None:
        chunk_size = default_chunk_size(T, B, D=D, dense=dense)
    cs = max(1, min(int(chunk_size), T))
    C = _chunks(T, cs)
    if split and dense and C == 1 and B < numba.get_num_threads():
        if B * T * D * D >= _MIN_PARALLEL_WORK:
            return _run_split(A, V, h0, out, reverse)
    if C == 1:
        # One chunk per element: one sequential task per element (the same code as the
        # blocked scan's phase 1, so the same result); no parallel launch for one element.
        if B == 1:
            _sequential_kernel(A, V, h0, out, reverse)
        else:
            (_batch_reverse if reverse else _batch_forward)(A, V, h0, out)
        return out
    E = np.empty((B, C, D), dtype=V.dtype)
    PHI = np.empty((B, C, *A.shape[2:]), dtype=V.dtype)
    CARRY = E if C == 1 else np.empty((B, C, D), dtype=V.dtype)
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
