r"""Spectral norms :math:`\|J_n\|_2 = \sigma_{\max}(J_n)` of a stack of small square matrices.

aGTF estimates its forcing strength from the spectral norms of the model's Jacobians at every
data-inferred state of a batch (MATH.md, GTF): thousands of ``M × M`` matrices with M of a few
units. LAPACK's SVD, called once per matrix by ``numpy.linalg.norm(J, 2, axis=(-2, -1))``,
spends ~2 µs of call overhead on each (6.4 ms for 16 × 200 Jacobians of Lorenz-63's 3 × 3,
a quarter of a training step; 1.6 ms here). :func:`spectral_norms` forms
:math:`S_n = J_n^\top J_n` and diagonalises it by cyclic Jacobi rotations (Golub & Van Loan,
Algorithm 8.5.3), which converge quadratically (J scaled by its largest entry first);
:math:`\sigma_{\max} = \sqrt{\lambda_{\max}(S_n)}`. The sweeps stop when the off-diagonal
part is below :math:`10^{-15}\|S\|_F`, so (Weyl) :math:`\lambda_{\max}` is within a few ulps
of :math:`\|S\|` and :math:`\sigma_{\max}` within a few ulps relative. A matrix with NaN or
Inf gives NaN.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

__all__ = ["MAX_JACOBI_DIM", "spectral_norms"]

#: Up to this dimension the compiled Jacobi kernel runs (O(M³) per sweep, a few sweeps);
#: larger matrices go to LAPACK's SVD, whose call overhead is then small.
MAX_JACOBI_DIM = 6

_SWEEPS = 60  # far beyond what quadratic convergence needs (≤ 10 sweeps for M ≤ 6)


@numba.njit(cache=True, nogil=True)
def _jacobi_sigma_max(J, S, out):  # pragma: no cover - jitted
    N, M = J.shape[0], J.shape[1]
    for n in range(N):
        scale = 0.0  # S of J / max|J| (no under- or overflow in the products)
        finite = True
        for i in range(M):
            for j in range(M):
                v = abs(J[n, i, j])
                finite &= v < np.inf  # False for Inf and NaN
                scale = max(scale, v)
        if not finite or scale == 0.0:
            out[n] = 0.0 if finite else np.nan
            continue
        for i in range(M):
            for j in range(i, M):
                s = 0.0
                for k in range(M):
                    s += (J[n, k, i] / scale) * (J[n, k, j] / scale)
                S[i, j] = s
                S[j, i] = s
        for _ in range(_SWEEPS):
            off = 0.0
            diag = 0.0
            for i in range(M):
                diag += S[i, i] * S[i, i]
                for j in range(i + 1, M):
                    off += S[i, j] * S[i, j]
            if off <= 1e-30 * diag:  # off-diagonal ≤ 1e-15 ‖S‖: λ within 1e-15 ‖S‖ (Weyl)
                break
            for p in range(M - 1):
                for q in range(p + 1, M):
                    apq = S[p, q]
                    if abs(apq) <= 1e-18 * (abs(S[p, p]) + abs(S[q, q])):
                        continue
                    theta = (S[q, q] - S[p, p]) / (2.0 * apq)
                    if abs(theta) > 1e150:  # θ² would overflow: t ≈ 1/(2θ)
                        t = 0.5 / theta
                    else:
                        t = 1.0 / (abs(theta) + np.sqrt(theta * theta + 1.0))
                        if theta < 0.0:
                            t = -t
                    c = 1.0 / np.sqrt(t * t + 1.0)
                    s = t * c
                    for k in range(M):  # S ← S G (columns p, q)
                        skp = S[k, p]
                        skq = S[k, q]
                        S[k, p] = c * skp - s * skq
                        S[k, q] = s * skp + c * skq
                    for k in range(M):  # S ← Gᵀ S (rows p, q)
                        spk = S[p, k]
                        sqk = S[q, k]
                        S[p, k] = c * spk - s * sqk
                        S[q, k] = s * spk + c * sqk
        lam = 0.0
        for i in range(M):
            lam = max(lam, S[i, i])
        out[n] = scale * np.sqrt(lam)


def spectral_norms(J: Any) -> np.ndarray:
    r""":math:`\sigma_{\max}` of every matrix of ``J`` ``(..., M, M)`` (NumPy), shape ``(...)``.

    Up to :data:`MAX_JACOBI_DIM` the compiled Jacobi kernel above (float64 arithmetic, for
    float32 input too); beyond it ``numpy.linalg.norm(J, 2, axis=(-2, -1))``.
    """
    J = np.asarray(J)
    if J.ndim < 2 or J.shape[-1] != J.shape[-2]:
        raise ValueError(f"J must have shape (..., M, M), got {J.shape}")
    M = J.shape[-1]
    if M > MAX_JACOBI_DIM or M == 0:
        return np.linalg.norm(J, ord=2, axis=(-2, -1))
    flat = np.ascontiguousarray(J.reshape(-1, M, M), dtype=np.float64)
    out = np.empty(flat.shape[0], dtype=np.float64)
    _jacobi_sigma_max(flat, np.empty((M, M)), out)
    return out.reshape(J.shape[:-2]).astype(J.dtype, copy=False)
