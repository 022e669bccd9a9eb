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
