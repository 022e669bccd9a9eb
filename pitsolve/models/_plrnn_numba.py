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
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["alrnn_sequential", "shplrnn_sequential"]

_JIT = {"cache": True, "nogil": True}
_LANES = 8  # partial sums per dot product; the pairwise tree below assumes 8


@numba.njit(**_JIT)
def shplrnn_sequential(a, W1, W2T, h1, h2, clipped, h0, out):  # pragma: no cover - jitted
    """Step the (clipped) shPLRNN ``T = out.shape[1]`` times from each ``h0[b]`` into ``out``."""
    B, T, M = out.shape
    L = h2.shape[0]
    L8 = (L // _LANES) * _LANES
    zero = out.dtype.type(0)
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
            for i in range(M):
                z[i] = zn[i]
                out[b, t, i] = zn[i]


@numba.njit(**_JIT)
def alrnn_sequential(a, WT, h, P, h0, out):  # pragma: no cover - jitted
    """Step the ALRNN ``T = out.shape[1]`` times from each ``h0[b]`` into ``out``."""
    B, T, M = out.shape
    zero = out.dtype.type(0)
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
            for i in range(M):
                zi = a[i] * z[i] + acc[i] + h[i]
                z[i] = zi
                out[b, t, i] = zi
