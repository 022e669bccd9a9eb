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
    """``a += WT.T @ h`` for ``WT`` ``(K, M)``, ``h`` ``(K,)``, ``a`` ``(M,)``."""
    K, M = WT.shape
    for k in range(K):
        hk = h[k]
        row = WT[k]
        for i in range(M):
            a[i] += row[i] * hk


@numba.njit(**_JIT)
def _sigmoid(a):  # pragma: no cover - jitted
    if a >= 0:
        return 1.0 / (1.0 + math.exp(-a))
    e = math.exp(a)
    return e / (1.0 + e)


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
                h[i] = np.tanh(a[i])
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
                n = np.tanh(c[i])
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
