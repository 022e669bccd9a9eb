r"""Numba kernels evaluating the shPLRNN family at many states at once, in parallel over rows.

Every row ``n`` of ``H (N, M)`` is a state :math:`z` (for DEER, the shifted trajectory): the
kernels give :math:`f`, the dense or diagonal Jacobian, the hidden quantities
(:func:`shplrnn_eval`), Jacobian–vector products (:func:`shplrnn_jvp`) and the parameter
cotangents summed over rows (:func:`shplrnn_vjp_params`). The sequential step loops and BPTT
are in ``pitsolve.models.plrnn._loops``; the sums here are formed in the same order, so
that :math:`f` here and a sequential step agree bit for bit.

No ``fastmath``: NaN/Inf propagate as in the NumPy ``f``. Arrays are C-contiguous in one
dtype (float32 or float64); the caller validates, these functions do not.
"""

from __future__ import annotations

import numba
import numpy as np

from ._loops import _JIT, _dot8

__all__ = ["shplrnn_eval", "shplrnn_jvp", "shplrnn_vjp_params"]

_PJIT = {"cache": True, "nogil": True, "parallel": True}


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


@numba.njit(**_JIT)
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


@numba.njit(**_JIT)
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


@numba.njit(**_JIT)
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


@numba.njit(**_JIT)
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


@numba.njit(**_JIT)
def _outer_add_group(acc, W, j0, units, X, nb):  # pragma: no cover - jitted
    """``acc[q, :nb] += Σ_u W[j0 + u, q] X[u, :nb]`` over the ``units`` units of a pass."""
    if units == _UNITS:
        _outer_add_units(acc, W, j0, X, nb)
    else:
        for u in range(units):
            _outer_add(acc, W[j0 + u], X[u], nb)


@numba.njit(**_JIT)
def _rows_from(acc, base, out, nb):  # pragma: no cover - jitted
    """``out[n] = acc[:, n] + base`` for n < ``nb``: transposed accumulators to rows."""
    for n in range(nb):
        for q in range(acc.shape[0]):
            out[n, q] = acc[q, n] + base[q]


@numba.njit(**_JIT)
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


@numba.njit(**_JIT)
def _eval_chunk(c, chunk, a, diag_a, W1T, W2T, h1, h2, P, C, clipped, H, ZH, FA, F, J, Dg, PHI,
                MASK, ON):  # pragma: no cover - jitted
    """Rows ``[c·chunk, (c+1)·chunk)`` of :func:`shplrnn_eval`: one task of its parallel loop,
    compiled once as a function of its own (a ``prange`` body this large compiled inside
    the parallel loop took 50 s, as a call 20 s)."""
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
    words = (L + _WORD - 1) // _WORD
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
    W1T = np.ascontiguousarray(W1.T)  # (L, M): row j is the column W1[:, j]
    diag_a = np.zeros(M * M, dtype=H.dtype)  # vec(diag(a))
    for i in range(M):
        diag_a[i * (M + 1)] = a[i]
    chunk = -(-chunk // _BLOCK) * _BLOCK  # blocks start at multiples of _BLOCK
    n_chunks = (N + chunk - 1) // chunk
    for c in numba.prange(n_chunks):
        _eval_chunk(np.int64(c), chunk, a, diag_a, W1T, W2T, h1, h2, P, C, clipped, H, ZH, FA, F, J,
                    Dg, PHI, MASK, ON)


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
