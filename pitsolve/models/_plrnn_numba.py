r"""Numba loops stepping the PLRNN family sequentially (the baseline parallel solvers race).

shPLRNN / clipped shPLRNN, one step for one batch element:

.. math::

    p = W_2 z + h_2,\qquad
    \phi = \operatorname{relu}(p) \;[-\operatorname{relu}(W_2 z)\ \text{clipped}],\qquad
    z' = a \odot z + W_1 \phi + h_1

ALRNN: :math:`z' = a \odot z + W \Phi(z) + h`, :math:`\Phi` the identity on the first
``M - P`` units and relu on the last ``P``.

Weights are laid out so that every inner loop runs over a contiguous axis and vectorises
without ``fastmath``: ``W2T`` is ``(M, L)`` (the pre-activation is a sum of columns), ``W1``
is ``(M, L)`` (row dot products with 8 independent partial sums), ``WT`` is ``(M, M)``.
No ``fastmath`` at all, so NaN/Inf propagate exactly as in the NumPy ``f``. Inputs are
``h0 (B, M)`` and ``out (B, T, M)``, C-contiguous, one dtype (float32 or float64); the caller
validates, these functions do not. The loop is serial over the batch, like a hand-written one.

Teacher forcing (MATH.md §6): the sequential and BPTT loops also take forcing arrays ``zhat``
and ``fa`` ``(B, T, M)`` and then step the forced recurrence
:math:`\tilde z_t = (1 - a_t) \odot F(\tilde z_{t-1}) + a_t \odot \hat z_t`. ``None``
means no forcing: Numba prunes the forced branches at compile time, so the unforced loops
compile exactly as without them.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["alrnn_bptt", "alrnn_sequential", "shplrnn_bptt", "shplrnn_sequential"]

_JIT = {"cache": True, "nogil": True}
_LANES = 8  # partial sums per dot product; the pairwise tree below assumes 8


@numba.njit(**_JIT)
def shplrnn_sequential(a, W1, W2T, h1, h2, clipped, h0, zhat, fa, out, pred):  # pragma: no cover
    """Step the (clipped) shPLRNN ``T = out.shape[1]`` times from each ``h0[b]`` into ``out``;
    forced by ``zhat``, ``fa`` ``(B, T, M)`` unless they are None, and then writing the
    predictions :math:`F(\tilde z_{t-1})` (before forcing) into ``pred`` unless it is None."""
    B, T, M = out.shape
    L = h2.shape[0]
    L8 = (L // _LANES) * _LANES
    zero = out.dtype.type(0)
    one = out.dtype.type(1)
    pre = np.empty(L, dtype=out.dtype)
    part = np.empty(_LANES, dtype=out.dtype)
    z = np.empty(M, dtype=out.dtype)
    zn = np.empty(M, dtype=out.dtype)
    for b in range(B):
        for i in range(M):
            z[i] = h0[b, i]
        for t in range(T):
            # p = W2 z + h2, accumulated column by column: contiguous (SIMD) over j
            for j in range(L):
                pre[j] = zero
            for k in range(M):
                zk = z[k]
                for j in range(L):
                    pre[j] += W2T[k, j] * zk
            if clipped:
                for j in range(L):
                    p0 = pre[j]
                    p = p0 + h2[j]
                    pre[j] = (zero if p <= zero else p) - (zero if p0 <= zero else p0)
            else:
                for j in range(L):
                    p = pre[j] + h2[j]
                    pre[j] = zero if p <= zero else p  # NaN passes, as in maximum
            # (W1 phi)_i over _LANES independent partial sums (a short dependency chain that
            # SIMD-vectorises without fastmath), then a fixed pairwise tree
            for i in range(M):
                for q in range(_LANES):
                    part[q] = zero
                for j0 in range(0, L8, _LANES):
                    for q in range(_LANES):
                        part[q] += W1[i, j0 + q] * pre[j0 + q]
                tail = zero
                for j in range(L8, L):
                    tail += W1[i, j] * pre[j]
                s = ((part[0] + part[1]) + (part[2] + part[3])) + (
                    (part[4] + part[5]) + (part[6] + part[7])
                )
                zn[i] = a[i] * z[i] + (s + tail) + h1[i]
            if pred is not None:
                for i in range(M):
                    pred[b, t, i] = zn[i]
            if zhat is not None:  # z̃ = (1 - a) F + a ẑ
                for i in range(M):
                    ai = fa[b, t, i]
                    zn[i] = (one - ai) * zn[i] + ai * zhat[b, t, i]
            for i in range(M):
                z[i] = zn[i]
                out[b, t, i] = zn[i]


@numba.njit(**_JIT)
def alrnn_sequential(a, WT, h, P, h0, zhat, fa, out, pred):  # pragma: no cover - jitted
    """Step the ALRNN ``T = out.shape[1]`` times from each ``h0[b]`` into ``out``; forced by
    ``zhat``, ``fa`` ``(B, T, M)`` unless they are None, and then writing the predictions
    (before forcing) into ``pred`` unless it is None."""
    B, T, M = out.shape
    zero = out.dtype.type(0)
    one = out.dtype.type(1)
    lin = M - P
    acc = np.empty(M, dtype=out.dtype)
    z = np.empty(M, dtype=out.dtype)
    for b in range(B):
        for i in range(M):
            z[i] = h0[b, i]
        for t in range(T):
            for i in range(M):
                acc[i] = zero
            for k in range(M):
                zk = z[k]
                if k >= lin and zk <= zero:
                    continue  # relu unit off: contributes exactly zero (NaN passes)
                for i in range(M):
                    acc[i] += WT[k, i] * zk
            if zhat is not None:  # z̃ = (1 - a) F + a ẑ
                for i in range(M):
                    ai = fa[b, t, i]
                    fi = a[i] * z[i] + acc[i] + h[i]
                    if pred is not None:
                        pred[b, t, i] = fi
                    zi = (one - ai) * fi + ai * zhat[b, t, i]
                    z[i] = zi
                    out[b, t, i] = zi
            else:
                for i in range(M):
                    zi = a[i] * z[i] + acc[i] + h[i]
                    z[i] = zi
                    out[b, t, i] = zi


# --------------------------------------------------------------------------------------------
# Batched evaluation: every row of H (N, M) independently, parallel over chunks of rows
# --------------------------------------------------------------------------------------------
_PJIT = {"cache": True, "nogil": True, "parallel": True}


@numba.njit(**_JIT)
def _dot8(w, x):  # pragma: no cover - jitted
    """``sum_j w[j] x[j]`` with 8 independent partial sums and a fixed pairwise tree."""
    n = x.shape[0]
    n8 = n - n % 8
    zero = x.dtype.type(0)
    p0 = p1 = p2 = p3 = p4 = p5 = p6 = p7 = zero
    for j in range(0, n8, 8):
        p0 += w[j] * x[j]
        p1 += w[j + 1] * x[j + 1]
        p2 += w[j + 2] * x[j + 2]
        p3 += w[j + 3] * x[j + 3]
        p4 += w[j + 4] * x[j + 4]
        p5 += w[j + 5] * x[j + 5]
        p6 += w[j + 6] * x[j + 6]
        p7 += w[j + 7] * x[j + 7]
    tail = zero
    for j in range(n8, n):
        tail += w[j] * x[j]
    return (((p0 + p1) + (p2 + p3)) + ((p4 + p5) + (p6 + p7))) + tail


@numba.njit(inline="always", **_JIT)
def _unit(p0, hj, clipped, zero, one):  # pragma: no cover - jitted
    """``(φ, φ', 1[p > 0])`` of one hidden unit from ``p0 = (W2 z)_j``, ``p = p0 + h2_j``:
    φ = relu(p) (clipped: relu(p) − relu(p0)); NaN passes, as in ``maximum``. ``zero`` and
    ``one`` are of the arrays' dtype."""
    p = p0 + hj
    o = one if p > zero else zero
    r = zero if p <= zero else p
    if clipped:
        return r - (zero if p0 <= zero else p0), o - (one if p0 > zero else zero), o
    return r, o, o


@numba.njit(**_JIT)
def _hidden(W2T, h2, clipped, z, phi, m, on):  # pragma: no cover - jitted
    """``phi = φ(W2 z + h2)``, ``m = φ'`` and ``on = 1[W2 z + h2 > 0]`` for one state ``z``."""
    M, L = W2T.shape
    zero = phi.dtype.type(0)
    one = phi.dtype.type(1)
    for j in range(L):
        phi[j] = zero
    for k in range(M):
        zk = z[k]
        for j in range(L):
            phi[j] += W2T[k, j] * zk
    for j in range(L):
        phi[j], m[j], on[j] = _unit(phi[j], h2[j], clipped, zero, one)


@numba.njit(inline="always", **_JIT)
def _outer_add(acc, w, x, nb):  # pragma: no cover - jitted
    """``acc[q, :nb] += w[q] * x[:nb]`` for every q: elementwise over the rows n."""
    for q in range(acc.shape[0]):
        wq = w[q]
        for n in range(nb):
            acc[q, n] += wq * x[n]


#: Rows per block of the batched evaluation: a block's states and outputs, transposed, stay
#: in the L1 cache while the loop over the hidden units runs.
_BLOCK = 128
#: Hidden units per pass of the accumulation: each accumulator row is loaded and stored once
#: per ``_UNITS`` units instead of once per unit (1.3x faster evaluation, same sums).
_UNITS = 5


@numba.njit(inline="always", **_JIT)
def _column_sums(W2T, j, Z, out, nb):  # pragma: no cover - jitted
    """``out[:nb] = Σ_k W2T[k, j] Z[k, :nb]``, added in order of k from zero, elementwise
    over the rows: up to 4 terms per pass are added in a register (``M`` passes in 4s)."""
    M = Z.shape[0]
    zero = out.dtype.type(0)
    k = 0
    while k < M:
        r = min(M - k, 4)
        w0 = W2T[k, j]
        if r == 4:
            w1, w2, w3 = W2T[k + 1, j], W2T[k + 2, j], W2T[k + 3, j]
            for n in range(nb):
                t = zero if k == 0 else out[n]
                t += w0 * Z[k, n]
                t += w1 * Z[k + 1, n]
                t += w2 * Z[k + 2, n]
                t += w3 * Z[k + 3, n]
                out[n] = t
        elif r == 3:
            w1, w2 = W2T[k + 1, j], W2T[k + 2, j]
            for n in range(nb):
                t = zero if k == 0 else out[n]
                t += w0 * Z[k, n]
                t += w1 * Z[k + 1, n]
                t += w2 * Z[k + 2, n]
                out[n] = t
        elif r == 2:
            w1 = W2T[k + 1, j]
            for n in range(nb):
                t = zero if k == 0 else out[n]
                t += w0 * Z[k, n]
                t += w1 * Z[k + 1, n]
                out[n] = t
        else:
            for n in range(nb):
                t = zero if k == 0 else out[n]
                t += w0 * Z[k, n]
                out[n] = t
        k += r


@numba.njit(inline="always", **_JIT)
def _outer_add_units(acc, Wc, j0, X, nb):  # pragma: no cover - jitted
    """``acc[q, :nb] += Σ_u Wc[j0 + u, q] X[u, :nb]`` for u = 0 … ``_UNITS`` − 1, added in
    order of u (the same sums as ``_UNITS`` calls of :func:`_outer_add`)."""
    for q in range(acc.shape[0]):
        for n in range(nb):
            t = acc[q, n]
            for u in range(_UNITS):
                t += Wc[j0 + u, q] * X[u, n]
            acc[q, n] = t


_WORD = 64  # hidden units per word of an activation pattern (bit j % 64 of word j // 64)
_ONE = np.uint64(1)


@numba.njit(inline="always", **_JIT)
def _changed_rows(on, off, changed, nb):  # pragma: no cover - jitted
    """``changed[n]``: whether row n's pattern differs from row n − 1's (n ≥ 1, and row 0
    always); returns how many rows changed."""
    total = 1
    changed[0] = True
    for n in range(1, nb):
        x = np.uint64(0)
        for w in range(on.shape[0]):
            x |= on[w, n] ^ on[w, n - 1]
        for w in range(off.shape[0]):
            x |= off[w, n] ^ off[w, n - 1]
        changed[n] = x != 0
        total += x != 0
    return total


@numba.njit(inline="always", **_JIT)
def _unit_pattern(on, off, j, n, one, zero):  # pragma: no cover - jitted
    """:math:`m_j = o_j - o^0_j` of row ``n`` from the pattern bits (``off`` may be empty)."""
    w, bit = j // _WORD, _ONE << np.uint64(j % _WORD)
    m = one if on[w, n] & bit else zero
    if off.shape[0] > 0 and off[w, n] & bit:
        m -= one
    return m


#: A block sums its Jacobians over the rows (elementwise, vectorised) rather than row by row
#: once more than this fraction of its rows have a new activation pattern.
_CHANGED_ROWS = 0.5
#: After such a block the next ones sum over the rows as the units go, without patterns,
#: except every ``_PROBE``-th block, which looks at the patterns again.
_PROBE = 8


@numba.njit(inline="always", **_JIT)
def _outer_add_group(acc, W, j0, units, X, nb):  # pragma: no cover - jitted
    """``acc[q, :nb] += Σ_u W[j0 + u, q] X[u, :nb]`` over the ``units`` units of a pass."""
    if units == _UNITS:
        _outer_add_units(acc, W, j0, X, nb)
    else:
        for u in range(units):
            _outer_add(acc, W[j0 + u], X[u], nb)


@numba.njit(inline="always", **_JIT)
def _rows_from(acc, base, out, nb):  # pragma: no cover - jitted
    """``out[n] = acc[:, n] + base`` for n < ``nb``: transposed accumulators to rows."""
    for n in range(nb):
        for q in range(acc.shape[0]):
            out[n, q] = acc[q, n] + base[q]


@numba.njit(inline="always", **_JIT)
def _pattern_sums(on, off, W, base, row, acc, mf, changed, out, nb):  # pragma: no cover
    r"""``out[n] = Σ_j W[j] m_j + base`` for the rows n < ``nb`` of a block, where
    :math:`m_j = o_j - o^0_j` with the bits of ``on`` and ``off`` (``(words, _BLOCK)``; no
    words in ``off``: :math:`o^0 = 0`). Nothing to do if ``W`` has no columns.

    The sum runs over j in order from zero, exactly as a plain loop would. Along a trajectory
    consecutive rows mostly share their pattern, and so their sum: it is then computed only
    for the rows whose pattern changed and copied to the others. When most rows changed,
    every row is summed, elementwise over the rows (``acc (Q, _BLOCK)``, ``mf (_UNITS,
    _BLOCK)`` scratch): the same sums, vectorised. Returns whether it did that."""
    Q = row.shape[0]
    if Q == 0:
        return False
    L = W.shape[0]
    zero = row.dtype.type(0)
    one = row.dtype.type(1)
    if _changed_rows(on, off, changed, nb) > _CHANGED_ROWS * nb:
        acc[:, :nb] = zero
        for j0 in range(0, L, _UNITS):
            units = min(_UNITS, L - j0)
            for u in range(units):
                w, sh = (j0 + u) // _WORD, np.uint64((j0 + u) % _WORD)
                bw = on[w]
                for n in range(nb):
                    mf[u, n] = row.dtype.type((bw[n] >> sh) & _ONE)
                if off.shape[0] > 0:
                    bw = off[w]
                    for n in range(nb):
                        mf[u, n] -= row.dtype.type((bw[n] >> sh) & _ONE)
            _outer_add_group(acc, W, j0, units, mf, nb)
        _rows_from(acc, base, out, nb)
        return True
    for n in range(nb):
        if changed[n]:
            for q in range(Q):
                row[q] = zero
            for j in range(L):
                m = _unit_pattern(on, off, j, n, one, zero)
                for q in range(Q):
                    row[q] += W[j, q] * m
            for q in range(Q):
                row[q] += base[q]
        for q in range(Q):
            out[n, q] = row[q]
    return False


@numba.njit(**_PJIT)
def shplrnn_eval(a, W1, W2T, h1, h2, P, C, clipped, H, ZH, FA, F, J, Dg, PHI, MASK, ON, chunk):
    r"""Per row ``n`` of ``H``: ``F = f``, ``J`` (dense, flattened ``(N, M*M)``), ``Dg = diag J``,
    and the hidden quantities ``PHI``, ``MASK`` (``φ'``), ``ON`` (``1[W2 z + h2 > 0]``).

    An output with zero rows is not computed. ``P`` is the model's ``(L, M*M)`` and ``C``
    ``(L, M)``. With forcing arrays ``ZH``, ``FA`` ``(N, M)`` (zero rows: none) the row is
    first forced, :math:`z = (1 - a) \odot h + a \odot \hat z`, and the Jacobians are those
    of :math:`h \mapsto f(z)`: ``J`` times :math:`\operatorname{diag}(1 - a)` (its columns),
    ``Dg`` times :math:`1 - a`.

    Rows go in blocks of ``_BLOCK``, transposed (state index outer, row inner), so that every
    inner loop runs over rows: elementwise, vectorised without reassociating any sum. Each
    sum runs over its index in order, whatever the block: :math:`p_j = \sum_k (W_2)_{jk} z_k
    + (h_2)_j` as in the other kernels, :math:`f_i = (a_i z_i + \sum_j (W_1)_{ij}\phi_j)
    + (h_1)_i`, :math:`J_q = \sum_j P_{jq} m_j`, so results do not depend on the chunking.
    """  # pragma: no cover - jitted
    N, M = H.shape
    L = h2.shape[0]
    MM = M * M
    dt = H.dtype
    zero = dt.type(0)
    one = dt.type(1)
    want_f, want_j, want_d = F.shape[0] > 0, J.shape[0] > 0, Dg.shape[0] > 0
    keep_phi, keep_m, keep_on = PHI.shape[0] > 0, MASK.shape[0] > 0, ON.shape[0] > 0
    forced = ZH.shape[0] > 0
    switches = want_j or want_d  # the Jacobians come from the activation patterns
    W1T = np.ascontiguousarray(W1.T)  # (L, M): row j is the column W1[:, j]
    words = (L + _WORD - 1) // _WORD
    diag_a = np.zeros(MM, dtype=dt)  # vec(diag(a))
    for i in range(M):
        diag_a[i * (M + 1)] = a[i]
    chunk = -(-chunk // _BLOCK) * _BLOCK  # blocks start at multiples of _BLOCK
    n_chunks = (N + chunk - 1) // chunk
    for c in numba.prange(n_chunks):
        Z = np.empty((M, _BLOCK), dtype=dt)  # the block's (forced) states, transposed
        S = np.empty((M, _BLOCK), dtype=dt)  # 1 - a
        Ft = np.empty((M if want_f else 0, _BLOCK), dtype=dt)
        pre = np.empty((_UNITS, _BLOCK), dtype=dt)  # φ of _UNITS hidden units
        mk = np.empty((_UNITS, _BLOCK), dtype=dt)  # φ'
        on = np.empty((_UNITS, _BLOCK), dtype=dt)
        # activation patterns: bits of 1[p > 0] and, clipped, of 1[p0 > 0]
        bits = np.zeros((words if switches else 0, _BLOCK), dtype=np.uint64)
        bits0 = np.zeros((words if switches and clipped else 0, _BLOCK), dtype=np.uint64)
        accJ = np.empty((MM if want_j else 0, _BLOCK), dtype=dt)  # sums over units, by row
        accD = np.empty((M if want_d else 0, _BLOCK), dtype=dt)
        by_rows = False  # the last block's pattern changed at most rows
        changed = np.empty(_BLOCK, dtype=np.bool_)
        jrow = np.empty(MM if want_j else 0, dtype=dt)
        drow = np.empty(M if want_d else 0, dtype=dt)
        stop = min(N, (c + 1) * chunk)
        for s in range(c * chunk, stop, _BLOCK):
            nb = min(_BLOCK, stop - s)
            for n in range(nb):
                for k in range(M):
                    if forced:
                        ak = FA[s + n, k]
                        S[k, n] = one - ak
                        Z[k, n] = (one - ak) * H[s + n, k] + ak * ZH[s + n, k]
                    else:
                        Z[k, n] = H[s + n, k]
            Ft[:, :nb] = zero
            # Jacobians: from the patterns (bits), or, while patterns change at most rows,
            # summed over the units as they go (every _PROBE-th block looks at the bits again)
            rows = by_rows and (s // _BLOCK) % _PROBE != 0
            use_bits = switches and not rows
            if rows:
                accJ[:, :nb] = zero
                accD[:, :nb] = zero
            bits[:, :nb] = 0
            bits0[:, :nb] = 0
            for j0 in range(0, L, _UNITS):
                units = min(_UNITS, L - j0)
                for u in range(units):
                    j = j0 + u
                    # p = W2 z + h2, summed over k in order as in _hidden
                    p0 = pre[u]
                    _column_sums(W2T, j, Z, p0, nb)
                    hj = h2[j]
                    if use_bits:  # the pattern, from p0 = (W2 z)_j
                        w, bit = j // _WORD, _ONE << np.uint64(j % _WORD)
                        nil = np.uint64(0)
                        bw = bits[w]
                        for n in range(nb):
                            bw[n] |= bit if p0[n] + hj > zero else nil
                        if clipped:
                            bw = bits0[w]
                            for n in range(nb):
                                bw[n] |= bit if p0[n] > zero else nil
                    # store only what is used: a store per unit and row is ~5 % of the time
                    if keep_on:
                        for n in range(nb):
                            pre[u, n], mk[u, n], on[u, n] = _unit(p0[n], hj, clipped, zero, one)
                    elif keep_m or rows:
                        for n in range(nb):
                            pre[u, n], mk[u, n], _ = _unit(p0[n], hj, clipped, zero, one)
                    else:
                        for n in range(nb):
                            pre[u, n], _, _ = _unit(p0[n], hj, clipped, zero, one)
                    if keep_phi:
                        PHI[s : s + nb, j] = pre[u, :nb]
                    if keep_m:
                        MASK[s : s + nb, j] = mk[u, :nb]
                    if keep_on:
                        ON[s : s + nb, j] = on[u, :nb]
                if want_f:
                    _outer_add_group(Ft, W1T, j0, units, pre, nb)
                if rows:
                    _outer_add_group(accJ, P, j0, units, mk, nb)
                    _outer_add_group(accD, C, j0, units, mk, nb)
            if switches:
                Jb, Db = J[s : s + nb], Dg[s : s + nb]  # empty if not wanted
                if rows:
                    _rows_from(accJ, diag_a, Jb, nb)
                    _rows_from(accD, a, Db, nb)
                else:
                    by_rows = _pattern_sums(bits, bits0, P, diag_a, jrow, accJ, mk, changed, Jb, nb)
                    by_rows |= _pattern_sums(bits, bits0, C, a, drow, accD, mk, changed, Db, nb)
                if forced:  # times diag(1 - a) on the right
                    for n in range(Jb.shape[0]):
                        for i in range(M):
                            for k in range(M):
                                Jb[n, i * M + k] *= S[k, n]
                    for n in range(Db.shape[0]):
                        for i in range(M):
                            Db[n, i] *= S[i, n]
            if want_f:
                for n in range(nb):
                    for i in range(M):
                        F[s + n, i] = a[i] * Z[i, n] + Ft[i, n] + h1[i]


@numba.njit(**_PJIT)
def shplrnn_jvp(a, W1, W2T, h2, clipped, H, V, OUT, transpose, chunk):  # pragma: no cover
    """``OUT = J V`` (or ``Jᵀ V`` when ``transpose``) per row, matrix-free: O(M L) per row."""
    N, M = H.shape
    L = h2.shape[0]
    n_chunks = (N + chunk - 1) // chunk
    for c in numba.prange(n_chunks):
        phi = np.empty(L, dtype=H.dtype)
        m = np.empty(L, dtype=H.dtype)
        on = np.empty(L, dtype=H.dtype)
        s = np.empty(L, dtype=H.dtype)
        for n in range(c * chunk, min(N, (c + 1) * chunk)):
            _hidden(W2T, h2, clipped, H[n], phi, m, on)
            v = V[n]
            for j in range(L):
                s[j] = 0
            if transpose:  # s = m ⊙ W1ᵀ v, out = a ⊙ v + W2ᵀ s
                for i in range(M):
                    vi = v[i]
                    W1i = W1[i]
                    for j in range(L):
                        s[j] += W1i[j] * vi
                for j in range(L):
                    s[j] *= m[j]
                for k in range(M):
                    OUT[n, k] = a[k] * v[k] + _dot8(W2T[k], s)
            else:  # s = m ⊙ W2 v, out = a ⊙ v + W1 s
                for k in range(M):
                    vk = v[k]
                    W2k = W2T[k]
                    for j in range(L):
                        s[j] += W2k[j] * vk
                for j in range(L):
                    s[j] *= m[j]
                for i in range(M):
                    OUT[n, i] = a[i] * v[i] + _dot8(W1[i], s)


@numba.njit(**_PJIT)
def shplrnn_vjp_params(W1, W2T, h2, clipped, H, U, chunk, GA, GW1, GW2T, GH1, GH2):
    """Per chunk ``c`` of rows, the parameter cotangents summed over its rows (``G*[c]``).

    With :math:`s = W_1^\\top u`: ``GA += u z``, ``GH1 += u``, ``GW1 += u φᵀ``,
    ``GH2 += 1[p > 0] s``, ``GW2T += z (m s)ᵀ`` (``W2``'s cotangent transposed). The chunking
    depends only on the number of rows, so the sums do not depend on the thread count.
    """  # pragma: no cover - jitted
    N, M = H.shape
    L = h2.shape[0]
    n_chunks = GA.shape[0]
    for c in numba.prange(n_chunks):
        phi = np.empty(L, dtype=H.dtype)
        m = np.empty(L, dtype=H.dtype)
        on = np.empty(L, dtype=H.dtype)
        s = np.empty(L, dtype=H.dtype)
        ga, gh1, gw1, gw2t, gh2 = GA[c], GH1[c], GW1[c], GW2T[c], GH2[c]
        ga[:] = 0
        gh1[:] = 0
        gw1[:, :] = 0
        gw2t[:, :] = 0
        gh2[:] = 0
        for n in range(c * chunk, min(N, (c + 1) * chunk)):
            z = H[n]
            u = U[n]
            _hidden(W2T, h2, clipped, z, phi, m, on)
            for j in range(L):
                s[j] = 0
            for i in range(M):
                ui = u[i]
                ga[i] += ui * z[i]
                gh1[i] += ui
                W1i = W1[i]
                g1 = gw1[i]
                for j in range(L):
                    s[j] += W1i[j] * ui
                    g1[j] += ui * phi[j]
            for j in range(L):
                gh2[j] += on[j] * s[j]
                s[j] *= m[j]
            for k in range(M):
                zk = z[k]
                g2 = gw2t[k]
                for j in range(L):
                    g2[j] += zk * s[j]


@numba.njit(inline="always", **_JIT)
def _dot_lanes(w, x, part):  # pragma: no cover - jitted
    """``sum_j w[j] x[j]`` exactly as :func:`_dot8` sums it (8 partial sums, the same pairwise
    tree), accumulated in the scratch array ``part (8,)``: inlined into the BPTT loops, where
    this form runs about twice as fast as the call."""
    n = x.shape[0]
    n8 = n - n % _LANES
    zero = x.dtype.type(0)
    for q in range(_LANES):
        part[q] = zero
    for j0 in range(0, n8, _LANES):
        for q in range(_LANES):
            part[q] += w[j0 + q] * x[j0 + q]
    tail = zero
    for j in range(n8, n):
        tail += w[j] * x[j]
    s = ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]))
    return s + tail


# --------------------------------------------------------------------------------------------
# Backpropagation through time: one backward loop over t per batch element
# --------------------------------------------------------------------------------------------


@numba.njit(**_JIT)
def shplrnn_bptt(
    a, W1, W2T, h1, h2, clipped, h0, states, g, zhat, fa,
    ga, gw1, gw2t, gh1, gh2, h0_bar, zhat_bar, a_bar, lam_out,
):  # fmt: skip
    r"""BPTT of the (clipped) shPLRNN for the trajectories ``states (B, T, M)`` from ``h0``.

    Backwards over t, per batch element: recompute :math:`p = W_2 z + h_2`, :math:`\phi`, the
    masks from :math:`z = h_{t-1}`; :math:`\lambda_t = g_t + J_{t+1}^\top \lambda_{t+1}`;
    with :math:`s = W_1^\top \lambda_t` accumulate ``ga += λ z``, ``gh1 += λ``,
    ``gw1 += λ φᵀ``, ``gh2 += 1[p > 0] s``, ``gw2t += z (m s)ᵀ`` (``W2``'s cotangent
    transposed); then :math:`J_t^\top \lambda_t = a \odot \lambda_t + W_2^\top (m \odot s)`.
    The gradient arrays are accumulated into (the caller zeroes them); ``h0_bar (B, M)`` gets
    :math:`J_1^\top \lambda_1`.

    Forced (``zhat``, ``fa`` given, ``states`` the forced trajectory): first
    ``zhat_bar[b, t] = a_t λ``, ``a_bar[b, t] = (ẑ_t − F(z)) λ`` (F recomputed as in the
    forward step), then λ ← (1 − a_t) λ enters everything above.

    Predictions (``lam_out`` given, ``zhat`` None; ``g`` the cotangents of the predictions
    :math:`F(\tilde z_{t-1})`, ``states`` the forced trajectory): λ is the carry alone, the
    cotangent of :math:`\tilde z_t`, stored in ``lam_out[b, t]``; then
    λ ← (1 − a_t) λ + g_t enters everything above.
    """  # pragma: no cover - jitted
    B, T, M = states.shape
    L = h2.shape[0]
    dt = states.dtype
    zero = dt.type(0)
    one = dt.type(1)
    phi = np.empty(L, dtype=dt)
    m = np.empty(L, dtype=dt)
    on = np.empty(L, dtype=dt)
    s = np.empty(L, dtype=dt)
    lam = np.empty(M, dtype=dt)
    carry = np.empty(M, dtype=dt)
    part = np.empty(_LANES, dtype=dt)
    for b in range(B):
        for i in range(M):
            carry[i] = zero
        for t in range(T - 1, -1, -1):
            z = states[b, t - 1] if t > 0 else h0[b]
            gt = g[b, t]
            if lam_out is not None:  # the loss is on the predictions: λ ← (1 - a_t) λ + g_t
                ft, lo = fa[b, t], lam_out[b, t]
                for i in range(M):
                    lo[i] = carry[i]
                    lam[i] = (one - ft[i]) * carry[i] + gt[i]
            else:
                for i in range(M):
                    lam[i] = gt[i] + carry[i]
            # the forward step's hidden quantities, exactly as the forward kernels form them
            for j in range(L):
                phi[j] = zero
            for k in range(M):
                zk = z[k]
                for j in range(L):
                    phi[j] += W2T[k, j] * zk
            for j in range(L):
                p0 = phi[j]
                p = p0 + h2[j]
                o = one if p > zero else zero
                r = zero if p <= zero else p  # NaN passes, as in maximum
                if clipped:
                    m[j] = o - (one if p0 > zero else zero)
                    r -= zero if p0 <= zero else p0
                else:
                    m[j] = o
                on[j] = o
                phi[j] = r
            if zhat is not None:  # cotangents of ẑ_t and a_t; then λ ← (1 - a_t) λ
                zt, ft, zb, ab = zhat[b, t], fa[b, t], zhat_bar[b, t], a_bar[b, t]
                for i in range(M):
                    li = lam[i]
                    ai = ft[i]
                    zb[i] = ai * li
                    ab[i] = (zt[i] - (a[i] * z[i] + _dot_lanes(W1[i], phi, part) + h1[i])) * li
                    lam[i] = (one - ai) * li
            # s = W1ᵀ λ and the cotangents of a, h1, W1 in one pass over W1
            for j in range(L):
                s[j] = zero
            for i in range(M):
                li = lam[i]
                ga[i] += li * z[i]
                gh1[i] += li
                W1i = W1[i]
                g1 = gw1[i]
                for j in range(L):
                    s[j] += W1i[j] * li
                    g1[j] += li * phi[j]
            for j in range(L):
                gh2[j] += on[j] * s[j]
                s[j] *= m[j]
            # W2's cotangent and Jᵀλ = a λ + W2ᵀ (m s) in one pass over W2ᵀ
            for k in range(M):
                zk = z[k]
                g2 = gw2t[k]
                for j in range(L):
                    g2[j] += zk * s[j]
                carry[k] = a[k] * lam[k] + _dot8(W2T[k], s)
        for i in range(M):
            h0_bar[b, i] = carry[i]


@numba.njit(**_JIT)
def alrnn_bptt(
    a, W, h, P, h0, states, g, zhat, fa, ga, gw, gh, h0_bar, zhat_bar, a_bar, lam_out
):  # pragma: no cover - jitted
    r"""BPTT of the ALRNN for the trajectories ``states (B, T, M)`` from ``h0 (B, M)``.

    Backwards over t: :math:`\lambda_t = g_t + J_{t+1}^\top \lambda_{t+1}`, then
    ``ga += λ z``, ``gh += λ``, ``gw += λ Φ(z)ᵀ`` and
    :math:`J_t^\top \lambda_t = a \odot \lambda_t + \Phi'(z) \odot W^\top \lambda_t` in one
    pass over the rows of ``W (M, M)``. Gradients accumulate into the given arrays.

    Forced (``zhat``, ``fa`` given): first ``zhat_bar[b, t] = a_t λ``,
    ``a_bar[b, t] = (ẑ_t − F(z)) λ``, then λ ← (1 − a_t) λ enters everything above.
    Predictions (``lam_out`` given, ``zhat`` None): as in :func:`shplrnn_bptt`.
    """
    B, T, M = states.shape
    dt = states.dtype
    zero = dt.type(0)
    one = dt.type(1)
    lin = M - P
    phi = np.empty(M, dtype=dt)
    acc = np.empty(M, dtype=dt)
    lam = np.empty(M, dtype=dt)
    carry = np.empty(M, dtype=dt)
    part = np.empty(_LANES, dtype=dt)
    for b in range(B):
        for i in range(M):
            carry[i] = zero
        for t in range(T - 1, -1, -1):
            z = states[b, t - 1] if t > 0 else h0[b]
            gt = g[b, t]
            if lam_out is not None:  # the loss is on the predictions: λ ← (1 - a_t) λ + g_t
                ft, lo = fa[b, t], lam_out[b, t]
                for i in range(M):
                    lo[i] = carry[i]
                    lam[i] = (one - ft[i]) * carry[i] + gt[i]
                    acc[i] = zero
            else:
                for i in range(M):
                    lam[i] = gt[i] + carry[i]
                    acc[i] = zero
            for k in range(lin):
                phi[k] = z[k]
            for k in range(lin, M):
                zk = z[k]
                phi[k] = zero if zk <= zero else zk  # NaN passes, as in maximum
            if zhat is not None:  # cotangents of ẑ_t and a_t; then λ ← (1 - a_t) λ
                zt, ft, zb, ab = zhat[b, t], fa[b, t], zhat_bar[b, t], a_bar[b, t]
                for i in range(M):
                    li = lam[i]
                    ai = ft[i]
                    zb[i] = ai * li
                    ab[i] = (zt[i] - (a[i] * z[i] + _dot_lanes(W[i], phi, part) + h[i])) * li
                    lam[i] = (one - ai) * li
            for i in range(M):
                li = lam[i]
                ga[i] += li * z[i]
                gh[i] += li
                Wi = W[i]
                gwi = gw[i]
                for k in range(M):
                    acc[k] += Wi[k] * li
                    gwi[k] += li * phi[k]
            for k in range(lin):
                carry[k] = acc[k] + a[k] * lam[k]
            for k in range(lin, M):
                d = one if z[k] > zero else zero
                carry[k] = d * acc[k] + a[k] * lam[k]
        for i in range(M):
            h0_bar[b, i] = carry[i]
