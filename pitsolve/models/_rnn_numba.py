r"""Compiled sequential loops of the built-in RNNs and the linear SSM (the baselines parallel
solvers beat).

Each kernel steps one recurrence for ``B`` independent sequences, writing ``out`` ``(B, T, D)``
in the dtype of its arrays. Input projections :math:`U x_t + b` are computed for all t by one
matrix product before the loop (BLAS), so the loop holds only the state-dependent work. Matrix
-vector products are written column by column (:math:`a \mathrel{+}= W_{:,k} h_k` over a
transposed, C-contiguous weight), whose inner loop vectorises without reassociating sums, so no
``fastmath`` flag is needed and NaN/Inf propagate as in the plain loop.

The Elman and GRU loops also step the teacher-forced recurrence (MATH.md §6)
:math:`\tilde h_t = (1 - a_t) \odot f(\tilde h_{t-1}, x_t) + a_t \odot \hat z_t` when given
forcing arrays ``zhat``, ``fa`` ``(B, T, D)``; ``None`` means no forcing (Numba prunes the
forced branches at compile time, so the unforced loops compile exactly as without them).
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = [
    "elman_bptt",
    "elman_loop",
    "gru_bptt",
    "gru_loop",
    "ssm_bptt",
    "ssm_loop",
]

_JIT = {"cache": True, "nogil": True}


@numba.njit(**_JIT)
def _matvec_acc(WT, h, a):  # pragma: no cover - jitted
    """``a += WT.T @ h`` for ``WT`` ``(K, M)``, ``h`` ``(K,)``, ``a`` ``(M,)``.

    Eight columns per pass over ``a`` (a pairwise sum of eight products, then one add to
    ``a[i]``): ``a`` is loaded and stored K/8 times instead of K times, which is what bounds
    the plain column loop.
    """
    K, M = WT.shape
    K8 = K - K % 8
    for k in range(0, K8, 8):
        h0, h1, h2, h3 = h[k], h[k + 1], h[k + 2], h[k + 3]
        h4, h5, h6, h7 = h[k + 4], h[k + 5], h[k + 6], h[k + 7]
        w0, w1, w2, w3 = WT[k], WT[k + 1], WT[k + 2], WT[k + 3]
        w4, w5, w6, w7 = WT[k + 4], WT[k + 5], WT[k + 6], WT[k + 7]
        for i in range(M):
            a[i] += ((w0[i] * h0 + w1[i] * h1) + (w2[i] * h2 + w3[i] * h3)) + (
                (w4[i] * h4 + w5[i] * h5) + (w6[i] * h6 + w7[i] * h7)
            )
    for k in range(K8, K):
        hk = h[k]
        wk = WT[k]
        for i in range(M):
            a[i] += wk[i] * hk


@numba.njit(**_JIT)
def _sigmoid(a):  # pragma: no cover - jitted
    r""":math:`\sigma(a) = 1/(1 + e^{-a})`; below a = -40, :math:`e^a` (equal to working
    precision) so that :math:`e^{-a}` never overflows, compiled or not."""
    if a < -40.0:
        return math.exp(a)
    return 1.0 / (1.0 + math.exp(-a))


@numba.njit(**_JIT)
def _tanh(a):  # pragma: no cover - jitted
    r"""tanh within 2 ulp in float64, about twice as fast as libm's.

    For :math:`|a| < 1/2` the Taylor series
    :math:`\tanh a = \sum_{n \ge 1} 2^{2n}(2^{2n}-1) B_{2n} a^{2n-1}/(2n)!` (17 terms; the
    first omitted one is below 1e-17 relative), else :math:`1 - 2/(1 + e^{2|a|})` with the sign
    of a (no cancellation there: the result is at least 0.46), and ±1 beyond |a| = 20.
    NaN propagates.
    """
    x = abs(a)
    if x < 0.5:
        s = a * a
        p = 4.294911078273806e-07
        p = p * s - 1.0597268320104654e-06
        p = p * s + 2.6147711512907546e-06
        p = p * s - 6.451689215655431e-06
        p = p * s + 1.5918905069328964e-05
        p = p * s - 3.927832388331683e-05
        p = p * s + 9.691537956929451e-05
        p = p * s - 0.00023912911424355248
        p = p * s + 0.000590027440945586
        p = p * s - 0.0014558343870513183
        p = p * s + 0.003592128036572481
        p = p * s - 0.008863235529902197
        p = p * s + 0.021869488536155203
        p = p * s - 0.05396825396825397
        p = p * s + 0.13333333333333333
        p = p * s - 0.3333333333333333
        return a + a * (p * s)
    # tanh(20) = 1 - 8e-18 rounds to 1; the test on x > 20 also keeps NaN on the exp branch
    r = 1.0 if x > 20.0 else 1.0 - 2.0 / (1.0 + math.exp(2.0 * x))
    return r if a > 0 else -r


@numba.njit(**_JIT)
def elman_loop(WT, h0, zhat, fa, out):  # pragma: no cover - jitted
    r""":math:`h_t = \tanh(W h_{t-1} + d_t)` in place: ``out`` holds the drive :math:`d_t` on
    entry and the states on exit. ``WT`` is :math:`W^\top` (C-contiguous), ``h0`` ``(B, D)``;
    forced by ``zhat``, ``fa`` ``(B, T, D)`` unless they are None."""
    B, T, D = out.shape
    dt = out.dtype
    one = dt.type(1)
    h = np.empty(D, dtype=dt)
    for b in range(B):
        h[:] = h0[b]
        for t in range(T):
            a = out[b, t]
            _matvec_acc(WT, h, a)
            if zhat is not None:
                zt, ft = zhat[b, t], fa[b, t]
                for i in range(D):
                    ai = ft[i]
                    h[i] = (one - ai) * dt.type(_tanh(a[i])) + ai * zt[i]
                    a[i] = h[i]
            else:
                for i in range(D):
                    h[i] = _tanh(a[i])
                    a[i] = h[i]


@numba.njit(**_JIT)
def gru_loop(WzrT, WnT, h0, pre, zhat, fa, out):  # pragma: no cover - jitted
    r"""GRU steps; ``pre`` ``(B or 1, T or 1, 3D)`` holds :math:`U_\ast x_t + b_\ast` for the
    gates z, r, n; ``WzrT`` is :math:`[W_z; W_r]^\top` ``(D, 2D)``, ``WnT`` :math:`W_n^\top`;
    forced by ``zhat``, ``fa`` ``(B, T, D)`` unless they are None."""
    B, T, D = out.shape
    dt = out.dtype
    one = dt.type(1)
    per_b = pre.shape[0] > 1
    per_t = pre.shape[1] > 1
    h = np.empty(D, dtype=out.dtype)
    a = np.empty(2 * D, dtype=out.dtype)
    c = np.empty(D, dtype=out.dtype)
    rh = np.empty(D, dtype=out.dtype)
    for b in range(B):
        h[:] = h0[b]
        pb = b if per_b else 0
        for t in range(T):
            p = pre[pb, t if per_t else 0]
            for i in range(2 * D):
                a[i] = p[i]
            _matvec_acc(WzrT, h, a)
            for i in range(D):
                rh[i] = _sigmoid(a[D + i]) * h[i]
                c[i] = p[2 * D + i]
            _matvec_acc(WnT, rh, c)
            o = out[b, t]
            if zhat is not None:
                zt, ft = zhat[b, t], fa[b, t]
                for i in range(D):
                    z = _sigmoid(a[i])
                    n = _tanh(c[i])
                    ai = ft[i]
                    h[i] = (one - ai) * dt.type(n + z * (h[i] - n)) + ai * zt[i]
                    o[i] = h[i]
            else:
                for i in range(D):
                    z = _sigmoid(a[i])
                    n = _tanh(c[i])
                    h[i] = n + z * (h[i] - n)
                    o[i] = h[i]


@numba.njit(**_JIT)
def ssm_loop(pre, bl, h0, out):  # pragma: no cover - jitted
    r""":math:`h_t = \sigma(p_t + b_\lambda) \odot h_{t-1} + q_t` with ``pre[..., :D]`` = p
    (:math:`W_\lambda x_t`) and ``pre[..., D:]`` = q (:math:`B x_t`), ``pre`` ``(B, T, 2D)``."""
    B, T, D = out.shape
    h = np.empty(D, dtype=out.dtype)
    for b in range(B):
        h[:] = h0[b]
        for t in range(T):
            p = pre[b, t]
            o = out[b, t]
            for i in range(D):
                h[i] = _sigmoid(p[i] + bl[i]) * h[i] + p[D + i]
                o[i] = h[i]


@numba.njit(**_JIT)
def _outer_acc(G, u, v):  # pragma: no cover - jitted
    """``G += u vᵀ`` for ``G`` ``(K, M)``, ``u`` ``(K,)``, ``v`` ``(M,)``."""
    K, M = G.shape
    for i in range(K):
        ui = u[i]
        Gi = G[i]
        for k in range(M):
            Gi[k] += ui * v[k]


_BLOCK = 8  # steps whose outer products are summed in one pass over a weight cotangent


@numba.njit(**_JIT)
def _outer_acc_block(G, U, off, V, n):  # pragma: no cover - jitted
    r"""``G += Σ_{s<n} U[s, off:off+K] V[s]ᵀ`` for ``G`` ``(K, M)``, ``n ≤ 8`` buffered steps.

    A full block adds eight outer products in one pass over ``G`` (a pairwise sum of eight
    products per entry, then one add), so the cotangent of a D × D weight is loaded and stored
    once per eight steps instead of every step.
    """
    K, M = G.shape
    if n == _BLOCK:
        v0, v1, v2, v3 = V[0], V[1], V[2], V[3]
        v4, v5, v6, v7 = V[4], V[5], V[6], V[7]
        for i in range(K):
            j = off + i
            u0, u1, u2, u3 = U[0, j], U[1, j], U[2, j], U[3, j]
            u4, u5, u6, u7 = U[4, j], U[5, j], U[6, j], U[7, j]
            Gi = G[i]
            for k in range(M):
                Gi[k] += ((u0 * v0[k] + u1 * v1[k]) + (u2 * v2[k] + u3 * v3[k])) + (
                    (u4 * v4[k] + u5 * v5[k]) + (u6 * v6[k] + u7 * v7[k])
                )
    else:
        for s in range(n):
            Us = U[s]
            Vs = V[s]
            for i in range(K):
                ui = Us[off + i]
                Gi = G[i]
                for k in range(M):
                    Gi[k] += ui * Vs[k]


@numba.njit(**_JIT)
def elman_bptt(
    WT, W, UT, U, bias, h0, X, states, g, recompute, zhat, fa,
    gw, gu, gb, h0_bar, x_bar, zhat_bar, a_bar,
):  # pragma: no cover - jitted  # fmt: skip
    r"""BPTT of :math:`h_t = \tanh(W h_{t-1} + U x_t + b)`.

    With ``recompute`` the step's output :math:`y_t = \tanh(W h_{t-1} + U x_t + b)` is
    recomputed from :math:`h_{t-1}` (``WT`` :math:`= W^\top`, ``UT`` :math:`= U^\top`), else it
    is read from ``states`` (:math:`y_t = h_t` on a trajectory). With
    :math:`\gamma_t = (1 - y_t^2) \odot \lambda_t`: ``gw += γ h_{t-1}ᵀ``, ``gu += γ x_tᵀ``
    (summed over blocks of steps), ``gb += γ``, ``x_bar[t] = Uᵀ γ`` and
    :math:`J_t^\top \lambda_t = W^\top \gamma_t`. ``X`` is ``(B, T, N_x)`` (``N_x = 0``: no
    inputs), ``U`` ``(D, N_x)``.

    Forced (``zhat``, ``fa`` given; needs ``recompute``): first
    ``zhat_bar[b, t] = a_t λ``, ``a_bar[b, t] = (ẑ_t − y_t) λ``, then λ ← (1 − a_t) λ.
    """
    B, T, D = states.shape
    N = U.shape[1]
    dt = states.dtype
    zero = dt.type(0)
    one = dt.type(1)
    y = np.empty(D, dtype=dt)
    carry = np.empty(D, dtype=dt)
    Gb = np.empty((_BLOCK, D), dtype=dt)  # γ of the buffered steps
    Hb = np.empty((_BLOCK, D), dtype=dt)  # their h_{t-1}
    Xb = np.empty((_BLOCK, N), dtype=dt)
    for b in range(B):
        for i in range(D):
            carry[i] = zero
        nb = 0
        for t in range(T - 1, -1, -1):
            hp = states[b, t - 1] if t > 0 else h0[b]
            if recompute:
                for i in range(D):
                    y[i] = bias[i]
                if N:
                    _matvec_acc(UT, X[b, t], y)
                _matvec_acc(WT, hp, y)
                for i in range(D):
                    y[i] = _tanh(y[i])
            else:
                for i in range(D):
                    y[i] = states[b, t, i]
            gt = g[b, t]
            gam = Gb[nb]
            for i in range(D):
                yi = y[i]
                li = gt[i] + carry[i]
                if zhat is not None:  # cotangents of ẑ_t and a_t; then λ ← (1 - a_t) λ
                    ai = fa[b, t, i]
                    zhat_bar[b, t, i] = ai * li
                    a_bar[b, t, i] = (zhat[b, t, i] - yi) * li
                    li = (one - ai) * li
                gi = (one - yi * yi) * li
                gam[i] = gi
                gb[i] += gi
                carry[i] = zero
                Hb[nb, i] = hp[i]
            _matvec_acc(W, gam, carry)
            if N:
                x = X[b, t]
                xb = x_bar[b, t]
                for k in range(N):
                    Xb[nb, k] = x[k]
                    xb[k] = zero
                _matvec_acc(U, gam, xb)
            nb += 1
            if nb == _BLOCK or t == 0:
                _outer_acc_block(gw, Gb, 0, Hb, nb)
                if N:
                    _outer_acc_block(gu, Gb, 0, Xb, nb)
                nb = 0
        for i in range(D):
            h0_bar[b, i] = carry[i]


@numba.njit(**_JIT)
def gru_bptt(
    WzrT, WnT, Wzr, Wn, U, h0, pre, X, states, g, zhat, fa,
    gwzr, gwn, gu, gb, h0_bar, x_bar, zhat_bar, a_bar,
):  # pragma: no cover - jitted  # fmt: skip
    r"""BPTT of the GRU (see :class:`pitsolve.models.GRU`).

    Per step the gates are recomputed from :math:`h_{t-1}` exactly as in :func:`gru_loop`
    (``pre``, ``WzrT``, ``WnT`` as there), then with :math:`u = \lambda_t`:
    :math:`g_z = u (h - n) z(1-z)`, :math:`g_n = u (1-z)(1-n^2)`, :math:`q = W_n^\top g_n`,
    :math:`g_r = q h r(1-r)`; ``gwn += g_n (r h)ᵀ``, ``gwzr += [g_z; g_r] hᵀ``,
    ``gu += G xᵀ`` (summed over blocks of steps), ``gb += G`` (:math:`G = [g_z; g_r; g_n]`),
    ``x_bar[t] = Uᵀ G`` and :math:`J_t^\top u = z u + r q + W_{zr}^\top [g_z; g_r]`. ``Wzr``
    is ``(2D, D)``, ``Wn`` ``(D, D)``, ``U`` ``(3D, N_x)`` (the stacked input weights), ``X``
    ``(B, T, N_x)``.

    Forced (``zhat``, ``fa`` given): first ``zhat_bar[b, t] = a_t u``,
    ``a_bar[b, t] = (ẑ_t − f) u`` with :math:`f = n + z (h - n)`, then u ← (1 − a_t) u.
    """
    B, T, D = states.shape
    N = U.shape[1]
    per_b = pre.shape[0] > 1
    per_t = pre.shape[1] > 1
    dt = states.dtype
    zero = dt.type(0)
    one = dt.type(1)
    a = np.empty(2 * D, dtype=dt)
    c = np.empty(D, dtype=dt)
    rs = np.empty(D, dtype=dt)
    q = np.empty(D, dtype=dt)
    carry = np.empty(D, dtype=dt)
    Gb = np.empty((_BLOCK, 3 * D), dtype=dt)  # G of the buffered steps
    Hb = np.empty((_BLOCK, D), dtype=dt)  # their h_{t-1}
    RHb = np.empty((_BLOCK, D), dtype=dt)  # their r ⊙ h_{t-1}
    Xb = np.empty((_BLOCK, N), dtype=dt)
    for b in range(B):
        pb = b if per_b else 0
        for i in range(D):
            carry[i] = zero
        nb = 0
        for t in range(T - 1, -1, -1):
            h = states[b, t - 1] if t > 0 else h0[b]
            p = pre[pb, t if per_t else 0]
            gt = g[b, t]
            G = Gb[nb]
            rh = RHb[nb]
            for i in range(2 * D):
                a[i] = p[i]
            _matvec_acc(WzrT, h, a)
            for i in range(D):
                r = dt.type(_sigmoid(a[D + i]))
                rs[i] = r
                rh[i] = r * h[i]
                c[i] = p[2 * D + i]
                Hb[nb, i] = h[i]
            _matvec_acc(WnT, rh, c)
            for i in range(D):
                z = dt.type(_sigmoid(a[i]))
                n = dt.type(_tanh(c[i]))
                u = gt[i] + carry[i]
                if zhat is not None:  # cotangents of ẑ_t and a_t; then u ← (1 - a_t) u
                    ai = fa[b, t, i]
                    zhat_bar[b, t, i] = ai * u
                    a_bar[b, t, i] = (zhat[b, t, i] - (n + z * (h[i] - n))) * u
                    u = (one - ai) * u
                G[i] = u * (h[i] - n) * z * (one - z)
                G[2 * D + i] = u * (one - z) * (one - n * n)
                carry[i] = z * u
                q[i] = zero
            _matvec_acc(Wn, G[2 * D :], q)
            for i in range(D):
                r = rs[i]
                G[D + i] = q[i] * h[i] * r * (one - r)
                carry[i] += r * q[i]
            _matvec_acc(Wzr, G[: 2 * D], carry)
            for i in range(3 * D):
                gb[i] += G[i]
            if N:
                x = X[b, t]
                xb = x_bar[b, t]
                for k in range(N):
                    Xb[nb, k] = x[k]
                    xb[k] = zero
                _matvec_acc(U, G, xb)
            nb += 1
            if nb == _BLOCK or t == 0:
                _outer_acc_block(gwzr, Gb, 0, Hb, nb)
                _outer_acc_block(gwn, Gb, 2 * D, RHb, nb)
                if N:
                    _outer_acc_block(gu, Gb, 0, Xb, nb)
                nb = 0
        for i in range(D):
            h0_bar[b, i] = carry[i]


@numba.njit(**_JIT)
def ssm_bptt(Wl, Bm, bl, h0, P, X, states, g, gwl, gbl, gB, h0_bar, x_bar):  # pragma: no cover
    r"""BPTT of :math:`h_t = \lambda_t \odot h_{t-1} + B x_t`,
    :math:`\lambda_t = \sigma(W_\lambda x_t + b_\lambda)`; ``P`` ``(B, T, D)`` holds
    :math:`W_\lambda x_t`. With :math:`u = \lambda_t` (the adjoint) and
    :math:`\gamma = u \odot h_{t-1} \odot \lambda(1-\lambda)`: ``gwl += γ xᵀ``, ``gbl += γ``,
    ``gB += u xᵀ``, ``x_bar[t] = W_λᵀ γ + Bᵀ u``, :math:`J_t^\top u = \lambda_t \odot u`."""
    B, T, D = states.shape
    N = X.shape[2]
    dt = states.dtype
    zero = dt.type(0)
    one = dt.type(1)
    gam = np.empty(D, dtype=dt)
    us = np.empty(D, dtype=dt)
    carry = np.empty(D, dtype=dt)
    for b in range(B):
        for i in range(D):
            carry[i] = zero
        for t in range(T - 1, -1, -1):
            h = states[b, t - 1] if t > 0 else h0[b]
            p = P[b, t]
            gt = g[b, t]
            x = X[b, t]
            for i in range(D):
                lam = dt.type(_sigmoid(p[i] + bl[i]))
                u = gt[i] + carry[i]
                gi = u * h[i] * lam * (one - lam)
                gam[i] = gi
                us[i] = u
                gbl[i] += gi
                carry[i] = lam * u
            _outer_acc(gwl, gam, x)
            _outer_acc(gB, us, x)
            xb = x_bar[b, t]
            for k in range(N):
                xb[k] = zero
            _matvec_acc(Wl, gam, xb)
            _matvec_acc(Bm, us, xb)
        for i in range(D):
            h0_bar[b, i] = carry[i]
