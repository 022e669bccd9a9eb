r"""Compiled sequential loops of the built-in models (the baselines parallel solvers beat).

Each kernel steps one recurrence for ``B`` independent sequences, writing ``out`` ``(B, T, D)``
in the dtype of its arrays. Input projections :math:`U x_t + b` are computed for all t by one
matrix product before the loop (BLAS), so the loop holds only the state-dependent work. Matrix
-vector products are written column by column (:math:`a \mathrel{+}= W_{:,k} h_k` over a
transposed, C-contiguous weight), whose inner loop vectorises without reassociating sums, so no
``fastmath`` flag is needed and NaN/Inf propagate as in the plain loop.
"""

from __future__ import annotations

import math

import numba
import numpy as np

__all__ = ["elman_loop", "gru_loop", "lorenz63_rk4", "ssm_loop"]

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
def elman_loop(WT, h0, out):  # pragma: no cover - jitted
    r""":math:`h_t = \tanh(W h_{t-1} + d_t)` in place: ``out`` holds the drive :math:`d_t` on
    entry and the states on exit. ``WT`` is :math:`W^\top` (C-contiguous), ``h0`` ``(B, D)``."""
    B, T, D = out.shape
    h = np.empty(D, dtype=out.dtype)
    for b in range(B):
        h[:] = h0[b]
        for t in range(T):
            a = out[b, t]
            _matvec_acc(WT, h, a)
            for i in range(D):
                h[i] = _tanh(a[i])
                a[i] = h[i]


@numba.njit(**_JIT)
def gru_loop(WzrT, WnT, h0, pre, out):  # pragma: no cover - jitted
    r"""GRU steps; ``pre`` ``(B or 1, T or 1, 3D)`` holds :math:`U_\ast x_t + b_\ast` for the
    gates z, r, n; ``WzrT`` is :math:`[W_z; W_r]^\top` ``(D, 2D)``, ``WnT`` :math:`W_n^\top`."""
    B, T, D = out.shape
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
def _lorenz63(x, y, z, sigma, rho, beta):  # pragma: no cover - jitted
    return sigma * (y - x), x * (rho - z) - y, x * y - beta * z


@numba.njit(**_JIT)
def lorenz63_rk4(h0, out, sigma, rho, beta, half_dt, dt, sixth_dt, two):  # pragma: no cover
    r"""Classical RK4 steps of the Lorenz-63 field; scalars arrive in the arrays' dtype so a
    float32 run computes in float32 (as the NumPy loop over ``f`` does)."""
    B, T, _ = out.shape
    for b in range(B):
        x, y, z = h0[b, 0], h0[b, 1], h0[b, 2]
        for t in range(T):
            a1, b1, c1 = _lorenz63(x, y, z, sigma, rho, beta)
            a2, b2, c2 = _lorenz63(
                x + half_dt * a1, y + half_dt * b1, z + half_dt * c1, sigma, rho, beta
            )
            a3, b3, c3 = _lorenz63(
                x + half_dt * a2, y + half_dt * b2, z + half_dt * c2, sigma, rho, beta
            )
            a4, b4, c4 = _lorenz63(x + dt * a3, y + dt * b3, z + dt * c3, sigma, rho, beta)
            x = x + sixth_dt * (a1 + two * a2 + two * a3 + a4)
            y = y + sixth_dt * (b1 + two * b2 + two * b3 + b4)
            z = z + sixth_dt * (c1 + two * c2 + two * c3 + c4)
            out[b, t, 0] = x
            out[b, t, 1] = y
            out[b, t, 2] = z
