"""Per-chunk solves of the Numba scan kernels (private; see :mod:`pitsolve.kernels.numba_scan`).

One call runs the recurrence of one batch element over one chunk of time from a carry-in,
writing its outputs: the sequential kernels, chunk 0 and phase 3 of the blocked scan, and
phase 1 of the split scan are all made of these calls.  Forward and reverse differ only in
the time direction ``dt``, the ``A`` index offset ``ao`` and the dense transpose flag
``trans``; diagonal and dense are chosen by ``ndim`` (pruned at compile time).  No
``fastmath``: NaN/Inf propagate as in the plain loop, and every output is bit-identical to
a plain loop from the same carry-in that accumulates ``sum_k op(A)[i, k] h[k]`` in
ascending ``k`` and adds ``b`` last.

Numba caches each function under its own module file and does not notice edits to the
modules it calls: after editing this module, remove the callers' caches
(``pitsolve/kernels/__pycache__/{numba_scan,_numba_summaries}*.nb[ic]``).
"""

from __future__ import annotations

import numba
from llvmlite import ir as _ir
from numba.core import cgutils as _cgutils
from numba.core import types as _types
from numba.extending import intrinsic as _intrinsic

_JIT = {"cache": True, "nogil": True}
_IJIT = {"cache": True, "nogil": True, "inline": "always"}


# --------------------------------------------------------------------------
# Performance notes (measured on the 2-core dev machine; they hold for the
# chunk summaries in ``_numba_summaries`` too):
# * Numba never lets LLVM inline one jitted function into another: a call per
#   time step (~300 bytes of exploded array arguments) cost 15-50 ns/step.
#   So the time loops live inside per-chunk functions, and the only per-step
#   helpers (the dense mat-vecs) are inlined in Numba IR (``inline="always"``).
# * Hot loops index whole arrays with explicit row indices: every array view
#   created, or array variable rebound, inside a time loop costs an atomic
#   incref/decref pair per step (~45 ns on this VM).
# * ``trans`` selects the transposed dense map (reverse scan).  It is
#   ``None`` (plain) or ``True`` (transposed), never a runtime bool: Numba
#   prunes ``if trans is None`` branches at compile time (it prunes branches
#   on ``None`` and on ``ndim``, not on literal booleans), so each direction
#   compiles only its own loops (half the compile time), and a runtime flag
#   in the inner loops made the dense step ~10x slower.
# * ``ndim`` branches on *arguments* are pruned at compile time by Numba; the
#   diagonal/dense dispatch therefore sits in non-inlined functions.
# * Slice assignments (``x[:] = y``) tripled the compile time; plain loops.
# --------------------------------------------------------------------------

if numba.config.DISABLE_JIT:

    def _prefetch(arr, idx):
        """No-op stand-in for the prefetch intrinsic when Numba's JIT is disabled."""

else:

    @_intrinsic
    def _prefetch(typingctx, arr, idx):
        """Software prefetch (read, keep in all cache levels) of ``arr.flat[idx]``.

        ``arr`` must be C-contiguous; a prefetch never faults, but callers keep
        ``idx`` in bounds anyway.
        """
        sig = _types.void(arr, _types.intp)

        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            i8p = _ir.IntType(8).as_pointer()
            ptr = builder.bitcast(builder.gep(ary.data, [args[1]]), i8p)
            i32 = _ir.IntType(32)
            fnty = _ir.FunctionType(_ir.VoidType(), [i8p, i32, i32, i32])
            fn = _cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
            builder.call(fn, [ptr, i32(0), i32(3), i32(1)])
            return context.get_dummy_value()

        return sig, codegen


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
    # First step from the carry-in (no array variable is rebound inside the
    # time loop: that costs an atomic incref/decref per step).
    if zero_carry:
        for d in range(D):
            Ob[t, d] = Vb[t, d]
    elif trans is None:
        _dense_matvec(Ab, t + ao, X, xr, Vb, t, Ob, t)
    else:
        _dense_matvec_t(Ab, t + ao, X, xr, Vb, t, Ob, t)
    if D <= 4:
        if trans is None:
            _dense_solve_small(Ab, Vb, Ob, t, n - 1, dt, ao)
        else:
            _dense_solve_small_t(Ab, Vb, Ob, t, n - 1, dt, ao)
        return
    # Software prefetch of the matrix ~16 KB ahead: the reverse scan walks
    # memory backwards one matrix at a time (a saw-tooth the hardware
    # prefetchers miss), which made it 2-3x slower than the forward scan.
    DD = D * D
    pf = max(1, 16384 // (DD * Ab.itemsize)) * dt
    line = max(1, 64 // Ab.itemsize)
    nA = Ab.shape[0]
    for _ in range(1, n):
        tp = t
        t += dt
        tq = t + ao + pf
        if 0 <= tq < nA:
            for q in range(0, DD, line):
                _prefetch(Ab, tq * DD + q)
        if trans is None:
            _dense_matvec(Ab, t + ao, Ob, tp, Vb, t, Ob, t)
        else:
            _dense_matvec_t(Ab, t + ao, Ob, tp, Vb, t, Ob, t)


@numba.njit(**_JIT)
def _dense_solve_small(Ab, Vb, Ob, t, n, dt, ao):  # pragma: no cover - jitted
    """``n`` more steps of :func:`_dense_solve` after time ``t`` for ``D <= 4``.

    Straight-line code with the state in registers: ~3x faster than the
    generic loops for tiny states.  Same operation order as
    :func:`_dense_matvec` (``((a_i0 h_0 + a_i1 h_1) + ...) + v_i``).
    """
    D = Vb.shape[1]
    if D == 1:
        h0 = Ob[t, 0]
        for _ in range(n):
            t += dt
            ta = t + ao
            h0 = Ab[ta, 0, 0] * h0 + Vb[t, 0]
            Ob[t, 0] = h0
    elif D == 2:
        h0, h1 = Ob[t, 0], Ob[t, 1]
        for _ in range(n):
            t += dt
            ta = t + ao
            y0 = Ab[ta, 0, 0] * h0 + Ab[ta, 0, 1] * h1 + Vb[t, 0]
            y1 = Ab[ta, 1, 0] * h0 + Ab[ta, 1, 1] * h1 + Vb[t, 1]
            h0, h1 = y0, y1
            Ob[t, 0] = h0
            Ob[t, 1] = h1
    elif D == 3:
        h0, h1, h2 = Ob[t, 0], Ob[t, 1], Ob[t, 2]
        for _ in range(n):
            t += dt
            ta = t + ao
            y0 = Ab[ta, 0, 0] * h0 + Ab[ta, 0, 1] * h1 + Ab[ta, 0, 2] * h2 + Vb[t, 0]
            y1 = Ab[ta, 1, 0] * h0 + Ab[ta, 1, 1] * h1 + Ab[ta, 1, 2] * h2 + Vb[t, 1]
            y2 = Ab[ta, 2, 0] * h0 + Ab[ta, 2, 1] * h1 + Ab[ta, 2, 2] * h2 + Vb[t, 2]
            h0, h1, h2 = y0, y1, y2
            Ob[t, 0] = h0
            Ob[t, 1] = h1
            Ob[t, 2] = h2
    elif D == 4:
        h0, h1, h2, h3 = Ob[t, 0], Ob[t, 1], Ob[t, 2], Ob[t, 3]
        for _ in range(n):
            t += dt
            ta = t + ao
            y0 = (
                Ab[ta, 0, 0] * h0
                + Ab[ta, 0, 1] * h1
                + Ab[ta, 0, 2] * h2
                + Ab[ta, 0, 3] * h3
                + Vb[t, 0]
            )
            y1 = (
                Ab[ta, 1, 0] * h0
                + Ab[ta, 1, 1] * h1
                + Ab[ta, 1, 2] * h2
                + Ab[ta, 1, 3] * h3
                + Vb[t, 1]
            )
            y2 = (
                Ab[ta, 2, 0] * h0
                + Ab[ta, 2, 1] * h1
                + Ab[ta, 2, 2] * h2
                + Ab[ta, 2, 3] * h3
                + Vb[t, 2]
            )
            y3 = (
                Ab[ta, 3, 0] * h0
                + Ab[ta, 3, 1] * h1
                + Ab[ta, 3, 2] * h2
                + Ab[ta, 3, 3] * h3
                + Vb[t, 3]
            )
            h0, h1, h2, h3 = y0, y1, y2, y3
            Ob[t, 0] = h0
            Ob[t, 1] = h1
            Ob[t, 2] = h2
            Ob[t, 3] = h3


@numba.njit(**_JIT)
def _dense_solve_small_t(Ab, Vb, Ob, t, n, dt, ao):  # pragma: no cover - jitted
    """Transposed twin of :func:`_dense_solve_small` (``op(A) = A^T``)."""
    D = Vb.shape[1]
    if D == 1:
        h0 = Ob[t, 0]
        for _ in range(n):
            t += dt
            ta = t + ao
            h0 = Ab[ta, 0, 0] * h0 + Vb[t, 0]
            Ob[t, 0] = h0
    elif D == 2:
        h0, h1 = Ob[t, 0], Ob[t, 1]
        for _ in range(n):
            t += dt
            ta = t + ao
            y0 = Ab[ta, 0, 0] * h0 + Ab[ta, 1, 0] * h1 + Vb[t, 0]
            y1 = Ab[ta, 0, 1] * h0 + Ab[ta, 1, 1] * h1 + Vb[t, 1]
            h0, h1 = y0, y1
            Ob[t, 0] = h0
            Ob[t, 1] = h1
    elif D == 3:
        h0, h1, h2 = Ob[t, 0], Ob[t, 1], Ob[t, 2]
        for _ in range(n):
            t += dt
            ta = t + ao
            y0 = Ab[ta, 0, 0] * h0 + Ab[ta, 1, 0] * h1 + Ab[ta, 2, 0] * h2 + Vb[t, 0]
            y1 = Ab[ta, 0, 1] * h0 + Ab[ta, 1, 1] * h1 + Ab[ta, 2, 1] * h2 + Vb[t, 1]
            y2 = Ab[ta, 0, 2] * h0 + Ab[ta, 1, 2] * h1 + Ab[ta, 2, 2] * h2 + Vb[t, 2]
            h0, h1, h2 = y0, y1, y2
            Ob[t, 0] = h0
            Ob[t, 1] = h1
            Ob[t, 2] = h2
    elif D == 4:
        h0, h1, h2, h3 = Ob[t, 0], Ob[t, 1], Ob[t, 2], Ob[t, 3]
        for _ in range(n):
            t += dt
            ta = t + ao
            y0 = (
                Ab[ta, 0, 0] * h0
                + Ab[ta, 1, 0] * h1
                + Ab[ta, 2, 0] * h2
                + Ab[ta, 3, 0] * h3
                + Vb[t, 0]
            )
            y1 = (
                Ab[ta, 0, 1] * h0
                + Ab[ta, 1, 1] * h1
                + Ab[ta, 2, 1] * h2
                + Ab[ta, 3, 1] * h3
                + Vb[t, 1]
            )
            y2 = (
                Ab[ta, 0, 2] * h0
                + Ab[ta, 1, 2] * h1
                + Ab[ta, 2, 2] * h2
                + Ab[ta, 3, 2] * h3
                + Vb[t, 2]
            )
            y3 = (
                Ab[ta, 0, 3] * h0
                + Ab[ta, 1, 3] * h1
                + Ab[ta, 2, 3] * h2
                + Ab[ta, 3, 3] * h3
                + Vb[t, 3]
            )
            h0, h1, h2, h3 = y0, y1, y2, y3
            Ob[t, 0] = h0
            Ob[t, 1] = h1
            Ob[t, 2] = h2
            Ob[t, 3] = h3


@numba.njit(**_JIT)
def _solve_chunk(Ab, Vb, Ob, X, xr, ts, n, dt, ao, trans, zero_carry):  # pragma: no cover
    """Run ``n`` steps of one batch element from the carry ``X[xr]``, writing ``Ob``.

    ``Ab``/``Vb``/``Ob`` are the batch element's ``A``/``V``/``out``
    (``(T, D)`` or ``(T, D, D)`` for ``Ab``).  Step ``j`` touches time index
    ``t = ts + j*dt`` of ``Vb``/``Ob`` and ``t + ao`` of ``Ab``.  With
    ``zero_carry`` the carry-in is zero and the first step is just ``Vb[t]``
    (``Ab`` is not read there: the reverse scan's first step would read
    ``A_T``).  ``trans``: ``None`` (``op(A) = A``) or ``True``
    (``op(A) = A^T``), dense only.
    """
    if Ab.ndim == 2:
        _diag_solve(Ab, Vb, Ob, X, xr, ts, n, dt, ao, zero_carry)
    else:
        _dense_solve(Ab, Vb, Ob, X, xr, ts, n, dt, ao, trans, zero_carry)
