r"""The Levenberg–Marquardt (ELK) step as a Kalman smoother in parallel-scan form.

Solves, for every batch element,

.. math::

    \min_\delta \sum_{t=1}^{T} \|\delta_t - F_t\delta_{t-1} - c_t\|^2 + \lambda\|\delta_t\|^2,
    \qquad \delta_0 = 0,

the MAP estimate of the linear-Gaussian model :math:`\delta_t = F_t\delta_{t-1} + c_t + w_t`,
:math:`w_t \sim N(0, I)`, observed as :math:`0 = \delta_t + v_t`, :math:`v_t \sim N(0, I/\lambda)`.
Three passes, each parallel over time:

1. filter covariances :math:`P_t` by a log-depth scan of the associative elements
   :math:`(A, C, J)` of Särkkä & García-Fernández (2021), with
   :math:`A_k = \tfrac{\sigma^2}{1+\sigma^2}F_k`, :math:`C_k = \tfrac{\sigma^2}{1+\sigma^2}I`,
   :math:`J_k = F_k^\top F_k/(1+\sigma^2)` (σ² = 1/λ; the first element has A = J = 0) and the
   composition :math:`A_{ij} = A_j(I + C_iJ_j)^{-1}A_i`,
   :math:`C_{ij} = A_j(I + C_iJ_j)^{-1}C_iA_j^\top + C_j`,
   :math:`J_{ij} = A_i^\top(I + J_jC_i)^{-1}J_jA_i + J_i`;
2. filter means, an affine scan: :math:`m_t = (I-K_t)F_t m_{t-1} + (I-K_t)c_t` with
   :math:`P^-_t = F_tP_{t-1}F_t^\top + I`, :math:`I - K_t = \sigma^2(P^-_t + \sigma^2 I)^{-1}`;
3. RTS smoother, a reverse affine scan: :math:`\delta_T = m_T`,
   :math:`\delta_t = E_t\delta_{t+1} + m_t - E_t(F_{t+1}m_t + c_{t+1})`,
   :math:`E_t = P_tF_{t+1}^\top(P^-_{t+1})^{-1}`.

``F`` is ``(B, T, D, D)`` (dense) or ``(B, T, D)`` (diagonal: every matrix is diagonal and every
inverse a division). Written against the array namespace: runs on NumPy and CuPy.

On NumPy arrays the covariances of step 1 come from a compiled loop instead: the Riccati
recursion :math:`P^-_t = F_tP_{t-1}F_t^\top + I`, :math:`P_t = \sigma^2(P^-_t + \sigma^2 I)^{-1}
P^-_t` (:math:`P_0 = 0`), O(T D³) work with the D × D solves inline (Cholesky), in parallel
over the batch. The log-depth scan does O(T log T) batched ``linalg.solve`` calls of 3 × 3
systems, which on a CPU cost ~1000× more (1.4 s against 1 ms at T = 10⁴, D = 3); on a GPU
its depth is what counts.

**On a time axis split over MPI ranks** (``slices``) each rank holds a contiguous slice of F
and c. The covariances are a recursion :math:`P_t = \mathcal R_t(P_{t-1})` whose steps compose
as the (A, C, J) elements above: a slice's composite element maps the covariance before it to
the covariance at its end, :math:`P \mapsto A(I + PJ)^{-1}PA^\top + C`. Each rank folds its
elements into one (a compiled loop, O(n D³)), the ranks gather them (O(D²) each) and each rank
applies those of the ranks before it to :math:`P_0 = 0` to get the covariance before its slice,
from which it runs its Riccati recursion. The means are a scan across ranks; the smoother's
gain at a slice's last step needs the next rank's first :math:`F`, :math:`P^-` and :math:`c`,
which that rank sends back as :math:`E` (one exchange), and the reverse scan runs across ranks.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from .._arrays import array_namespace, to_numpy

__all__ = ["lm_smoother"]


class _Ops:
    """Matrix algebra for dense (…, D, D) or diagonal (…, D) operands."""

    def __init__(self, xp: Any, dense: bool, D: int, dtype: Any, spd_solve: Any = None):
        self.xp, self.dense, self.spd_solve = xp, dense, spd_solve
        self.eye = xp.eye(D, dtype=dtype) if dense else xp.ones(D, dtype=dtype)

    def mm(self, X: Any, Y: Any) -> Any:
        return self.xp.matmul(X, Y) if self.dense else X * Y

    def T(self, X: Any) -> Any:
        return self.xp.swapaxes(X, -1, -2) if self.dense else X

    def solve(self, X: Any, Y: Any) -> Any:
        """X⁻¹ Y (X symmetric positive definite: ``spd_solve`` if given)."""
        if not self.dense:
            return Y / X
        return self.xp.linalg.solve(X, Y) if self.spd_solve is None else self.spd_solve(X, Y)

    def mv(self, X: Any, v: Any) -> Any:
        return self.xp.matmul(X, v[..., None])[..., 0] if self.dense else X * v


def _combine(ops: _Ops, early: tuple, late: tuple) -> tuple:
    """(A, C, J) of ``late ∘ early`` (early = i, late = j)."""
    Ai, Ci, Ji = early
    Aj, Cj, Jj = late
    M = ops.eye + ops.mm(Ci, Jj)  # I + C_i J_j
    A = ops.mm(Aj, ops.solve(M, Ai))
    C = ops.mm(Aj, ops.solve(M, ops.mm(Ci, ops.T(Aj)))) + Cj
    N = ops.T(M)  # I + J_j C_i (C, J symmetric)
    J = ops.mm(ops.T(Ai), ops.solve(N, ops.mm(Jj, Ai))) + Ji
    return A, C, J


def _filter_covariances(ops: _Ops, F: Any, s2: float, P0: Any = None) -> Any:
    """P_t for t = 1..T by a Hillis–Steele scan of (A, C, J) elements, from the covariance
    ``P0`` before the first step (None: 0, the known initial state δ_0 = 0)."""
    xp = ops.xp
    g = s2 / (1.0 + s2)
    A = g * F
    C = xp.broadcast_to(g * ops.eye, F.shape).copy()
    J = ops.mm(ops.T(F), F) / (1.0 + s2)
    if P0 is not None:  # the prior as an absorbing element before the first step
        A, C, J = (xp.concatenate([xp.zeros_like(X[:, :1]), X], axis=1) for X in (A, C, J))
        C[:, 0] = P0
        return _filter_covariances_scan(ops, A, C, J)[:, 1:]
    A[:, 0] = 0.0  # known initial state δ_0 = 0: the first element is absorbing
    J[:, 0] = 0.0
    return _filter_covariances_scan(ops, A, C, J)


def _filter_covariances_scan(ops: _Ops, A: Any, C: Any, J: Any) -> Any:
    """The C of the inclusive Hillis–Steele scan of the elements (A, C, J) over time."""
    xp = ops.xp
    T = A.shape[1]
    off = 1
    while off < T:
        new = _combine(ops, (A[:, :-off], C[:, :-off], J[:, :-off]),
                       (A[:, off:], C[:, off:], J[:, off:]))
        A, C, J = (xp.concatenate([X[:, :off], Y], axis=1) for X, Y in zip((A, C, J), new,
                                                                         strict=True))
        off *= 2
    return C


@numba.njit(cache=True, nogil=True, inline="always")
def _cholesky(A, shift, L):  # pragma: no cover - jitted
    """``L`` (lower) with ``L Lᵀ = A + shift·I``, read from the lower triangle of the symmetric
    positive definite ``A`` (D × D)."""
    D = A.shape[0]
    for j in range(D):
        d = A[j, j] + shift
        for k in range(j):
            d -= L[j, k] * L[j, k]
        d = np.sqrt(d)
        L[j, j] = d
        for i in range(j + 1, D):
            v = A[i, j]
            for k in range(j):
                v -= L[i, k] * L[j, k]
            L[i, j] = v / d


@numba.njit(cache=True, nogil=True, inline="always")
def _cholesky_solve(L, Y, X):  # pragma: no cover - jitted
    """``X = (L Lᵀ)⁻¹ Y`` column by column: forward, then back substitution (``X`` may be
    ``Y``)."""
    D = L.shape[0]
    for c in range(Y.shape[1]):
        for i in range(D):
            v = Y[i, c]
            for k in range(i):
                v -= L[i, k] * X[k, c]
            X[i, c] = v / L[i, i]
        for i in range(D - 1, -1, -1):
            v = X[i, c]
            for k in range(i + 1, D):
                v -= L[k, i] * X[k, c]
            X[i, c] = v / L[i, i]


@numba.njit(cache=True, nogil=True, inline="always")
def _product(X, Y, out, tx, ty):  # pragma: no cover - jitted
    """``out = op(X) op(Y)`` for D × D blocks, op the transpose where ``tx`` / ``ty``."""
    D = out.shape[0]
    for i in range(D):
        for j in range(D):
            acc = 0.0
            for k in range(D):
                acc += (X[k, i] if tx else X[i, k]) * (Y[j, k] if ty else Y[k, j])
            out[i, j] = acc


@numba.njit(cache=True, nogil=True)
def _riccati_dense(F, s2, P0, P):  # pragma: no cover - jitted
    """P[b, t] of the recursion in the module docstring for dense F ``(B, T, D, D)``, from
    the covariance ``P0[b]`` before the first step."""
    B, T, D, _ = F.shape
    Pp = np.zeros((D, D), dtype=F.dtype)  # P_{t-1}
    Pm = np.empty((D, D), dtype=F.dtype)  # P⁻_t
    X = np.empty((D, D), dtype=F.dtype)
    Lc = np.empty((D, D), dtype=F.dtype)
    for b in range(B):
        Pp[:, :] = P0[b]
        for t in range(T):
            Ft = F[b, t]
            # X = F P_{t-1}; P⁻ = X Fᵀ + I, symmetrised
            _product(Ft, Pp, X, False, False)
            _product(X, Ft, Pm, False, True)
            for i in range(D):
                Pm[i, i] += 1.0
                for j in range(i):
                    Pm[i, j] = Pm[j, i] = 0.5 * (Pm[i, j] + Pm[j, i])
            # P_t = σ² S⁻¹ P⁻ with S = P⁻ + σ²I (symmetric positive definite)
            _cholesky(Pm, s2, Lc)
            _cholesky_solve(Lc, Pm, X)
            for i in range(D):
                for j in range(D):
                    Pp[i, j] = 0.5 * s2 * (X[i, j] + X[j, i])  # symmetric by construction
            P[b, t] = Pp


@numba.njit(cache=True, nogil=True)
def _riccati_diagonal(F, s2, P0, P):  # pragma: no cover - jitted
    """P[b, t] of the recursion for diagonal F ``(B, T, D)``: elementwise, from ``P0[b]``."""
    B, T, D = F.shape
    for b in range(B):
        for d in range(D):
            p = P0[b, d]
            for t in range(T):
                f = F[b, t, d]
                pm = f * p * f + 1.0
                p = s2 * pm / (pm + s2)
                P[b, t, d] = p


@numba.njit(cache=True, nogil=True, parallel=True)
def _spd_solve_kernel(S, Y, X):  # pragma: no cover - jitted
    """X[n] = S[n]⁻¹ Y[n] for symmetric positive definite S[n] (D × D), by Cholesky."""
    N, D, _ = S.shape
    for n in numba.prange(N):
        L = np.empty((D, D), dtype=S.dtype)
        _cholesky(S[n], 0.0, L)
        _cholesky_solve(L, Y[n], X[n])


def _spd_solve(S: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """S⁻¹ Y for stacks ``(..., D, D)`` of symmetric positive definite S (NumPy)."""
    Y = np.broadcast_to(Y, S.shape[:-2] + Y.shape[-2:])
    lead = S.shape[:-2]
    Sf = np.ascontiguousarray(S.reshape(-1, *S.shape[-2:]))
    Yf = np.ascontiguousarray(Y.reshape(-1, *Y.shape[-2:]))
    X = np.empty_like(Yf)
    _spd_solve_kernel(Sf, Yf, X)
    return X.reshape(*lead, *Y.shape[-2:])


def _filter_covariances_compiled(F: np.ndarray, s2: float, P0: Any = None) -> np.ndarray:
    """P_t for t = 1..T by the compiled Riccati recursion (NumPy arrays), from the covariance
    ``P0`` before the first step (None: 0)."""
    F = np.ascontiguousarray(F)
    P = np.empty_like(F)
    P0 = np.zeros_like(F[:, 0]) if P0 is None else np.ascontiguousarray(P0, dtype=F.dtype)
    (_riccati_dense if F.ndim == 4 else _riccati_diagonal)(F, float(s2), P0, P)
    return P


@numba.njit(cache=True, nogil=True, inline="always")
def _gauss_solve(M, Y, X, W):  # pragma: no cover - jitted
    """``X = M⁻¹ Y`` by Gaussian elimination with partial pivoting (``W``: scratch D × D)."""
    D = M.shape[0]
    W[:, :] = M
    X[:, :] = Y
    for k in range(D):
        p = k
        for i in range(k + 1, D):
            if abs(W[i, k]) > abs(W[p, k]):
                p = i
        if p != k:
            for j in range(D):
                W[k, j], W[p, j] = W[p, j], W[k, j]
            for j in range(X.shape[1]):
                X[k, j], X[p, j] = X[p, j], X[k, j]
        for i in range(k + 1, D):
            m = W[i, k] / W[k, k]
            for j in range(k, D):
                W[i, j] -= m * W[k, j]
            for j in range(X.shape[1]):
                X[i, j] -= m * X[k, j]
    for k in range(D - 1, -1, -1):
        for j in range(X.shape[1]):
            v = X[k, j]
            for i in range(k + 1, D):
                v -= W[k, i] * X[i, j]
            X[k, j] = v / W[k, k]


@numba.njit(cache=True, nogil=True)
def _fold_dense(F, s2, A, C, J):  # pragma: no cover - jitted
    """The composite (A, C, J)[b] of the steps of dense F ``(B, n, D, D)``, folded into the
    elements given (the identity (I, 0, 0) for a plain slice)."""
    B, n, D, _ = F.shape
    g = s2 / (1.0 + s2)
    Jk = np.empty((D, D), dtype=F.dtype)
    M = np.empty((D, D), dtype=F.dtype)
    W = np.empty((D, D), dtype=F.dtype)
    Y = np.empty((D, 2 * D), dtype=F.dtype)
    X = np.empty((D, 2 * D), dtype=F.dtype)
    Z = np.empty((D, D), dtype=F.dtype)
    Mt = np.empty((D, D), dtype=F.dtype)
    Zs = np.empty((D, D), dtype=F.dtype)
    for b in range(B):
        Ab, Cb, Jb = A[b], C[b], J[b]
        for t in range(n):
            Ft = F[b, t]
            _product(Ft, Ft, Jk, True, False)  # J_k = Fᵀ F / (1 + σ²)
            Jk /= 1.0 + s2
            _product(Cb, Jk, M, False, False)  # M = I + C J_k
            for i in range(D):
                M[i, i] += 1.0
            Y[:, :D] = Ab
            Y[:, D:] = Cb
            _gauss_solve(M, Y, X, W)  # [M⁻¹A | M⁻¹C]
            _product(Jk, Ab, Z, False, False)  # J += Aᵀ (Mᵀ)⁻¹ J_k A
            Mt[:, :] = M.T
            _gauss_solve(Mt, Z, Zs, W)
            _product(Ab, Zs, Z, True, False)
            Jb += Z
            # A = A_k M⁻¹A, C = A_k M⁻¹C A_kᵀ + C_k with A_k = g F, C_k = g I
            _product(Ft, X[:, :D], Ab, False, False)
            Ab *= g
            _product(Ft, X[:, D:], Z, False, False)
            _product(Z, Ft, Cb, False, True)
            Cb *= g * g
            for i in range(D):
                Cb[i, i] += g


@numba.njit(cache=True, nogil=True)
def _fold_diagonal(F, s2, A, C, J):  # pragma: no cover - jitted
    """:func:`_fold_dense` for diagonal F ``(B, n, D)``: elementwise."""
    B, n, D = F.shape
    g = s2 / (1.0 + s2)
    for b in range(B):
        for d in range(D):
            a, c, j = A[b, d], C[b, d], J[b, d]
            for t in range(n):
                f = F[b, t, d]
                jk = f * f / (1.0 + s2)
                m = 1.0 + c * jk
                j = a * a * jk / m + j
                a = g * f * a / m
                c = g * f * c * f * g / m + g
            A[b, d], C[b, d], J[b, d] = a, c, j


def _slice_element(F: np.ndarray, s2: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The composite (A, C, J) of a slice's covariance steps (NumPy F ``(B, n, D[, D])``)."""
    F = np.ascontiguousarray(F)
    dense = F.ndim == 4
    D = F.shape[-1]
    A = np.broadcast_to(np.eye(D) if dense else np.ones(D),
                        (F.shape[0], *F.shape[2:])).astype(F.dtype)
    C, J = np.zeros_like(A), np.zeros_like(A)
    (_fold_dense if dense else _fold_diagonal)(F, float(s2), A, C, J)
    return A, C, J


def _apply_element(ops: _Ops, element: tuple, P: Any) -> Any:
    """The covariance after a slice with composite ``element`` from the covariance ``P``
    before it: :math:`A(I + PJ)^{-1}PA^\top + C`."""
    A, C, J = element
    if not ops.dense:
        return A * P * A / (1.0 + P * J) + C
    M = ops.eye + ops.mm(P, J)
    return ops.mm(A, ops.xp.linalg.solve(M, ops.mm(P, ops.T(A)))) + C


def lm_smoother(
    F: Any, c: Any, lam: float, *, scan: Any, scan_reverse: Any, compiled: bool = False,
    slices: Any = None,
) -> Any:
    """The minimiser δ ``(B, T, D)`` of the damped least-squares problem above.

    ``scan(A, b, h0)`` and ``scan_reverse(A, g)`` are affine-scan kernels with the layout of
    :mod:`pitsolve.kernels.numpy_scan` (so the means use the fast compiled scans).
    ``compiled`` (NumPy arrays only) takes the covariances from the compiled Riccati
    recursion and solves the SPD systems by compiled Cholesky factorisations; otherwise the
    log-depth scan and the array namespace's solves, which run on any device. ``slices``: a
    :class:`~pitsolve.parallel.slices.TimeSlices` when the time axis is split over MPI ranks
    (this rank's slice of F and c; ``scan`` and ``scan_reverse`` then run across the ranks).
    """
    xp = array_namespace(F, c)
    B, n, D = c.shape
    dense = F.ndim == 4
    s2 = 1.0 / lam
    if n == 0:  # (a rank whose part has converged, before every unconverged one)
        return _empty_part(F, c, s2, scan, scan_reverse, slices)
    # every matrix solved below (P⁻, P⁻ + σ²I) is symmetric positive definite: Cholesky
    ops = _Ops(xp, dense, D, c.dtype, spd_solve=_spd_solve if compiled else None)
    split = slices is not None and slices.split
    P0 = _covariance_before(ops, F, s2, slices) if split else None
    if compiled:
        P = _filter_covariances_compiled(F, s2, P0)
    else:
        P = _filter_covariances(ops, F, s2, P0)
    first = xp.zeros_like(P[:, :1]) if P0 is None else xp.asarray(P0)[:, None]
    P_prev = xp.concatenate([first, P[:, :-1]], axis=1)
    P_pred = ops.mm(ops.mm(F, P_prev), ops.T(F)) + ops.eye  # P⁻_t
    S = P_pred + s2 * ops.eye
    G = s2 * ops.solve(S, xp.broadcast_to(ops.eye, S.shape))  # I − K_t = σ²(P⁻ + σ²I)⁻¹
    m = scan(xp.ascontiguousarray(ops.mm(G, F)), xp.ascontiguousarray(ops.mv(G, c)),
             xp.zeros((B, D), dtype=c.dtype))
    # smoother: δ_t = E_t δ_{t+1} + g_t, E_t = P_t F_{t+1}ᵀ (P⁻_{t+1})⁻¹ for t < T
    if split:  # E at the step before the slice: E_{s-1} = P_{s-1} F_sᵀ (P⁻_s)⁻¹ (rank 0: none)
        E = ops.T(ops.solve(P_pred, ops.mm(F, P_prev)))
    else:
        E = ops.T(ops.solve(P_pred[:, 1:], ops.mm(F[:, 1:], P[:, :-1])))  # (P⁻)⁻¹ symmetric
    F_next, c_next = F[:, 1:], c[:, 1:]
    if split:  # the step after the slice: the next rank's first E, F and c (the last: none)
        after = slices.halo_back((E[:, 0], F[:, 0], c[:, 0]), None)
        if after is not None:
            E_b, F_b, c_b = after
            F_next = xp.concatenate([F_next, xp.asarray(F_b)[:, None]], axis=1)
            c_next = xp.concatenate([c_next, xp.asarray(c_b)[:, None]], axis=1)
        E_own = E[:, 1:] if after is None else xp.concatenate(
            [E[:, 1:], xp.asarray(E_b)[:, None]], axis=1)
        E_before = E[:, :1] if slices.rank > 0 else xp.zeros_like(E[:, :1])
        E = E_own
    else:
        E_before = xp.zeros((B, 1, *E.shape[2:]), dtype=E.dtype)
    k = E.shape[1]  # steps with a gain to the step after them
    g = m.copy()
    g[:, :k] = m[:, :k] - ops.mv(E, ops.mv(F_next, m[:, :k]) + c_next)
    # reverse kernel computes λ_t = g_t + A_{t+1}ᵀ λ_{t+1}: pass A_{t+1} = E_tᵀ
    A_rev = xp.concatenate([ops.T(E_before), ops.T(E[:, : c.shape[1] - 1])], axis=1)
    return scan_reverse(xp.ascontiguousarray(A_rev), g)


def _empty_part(F: Any, c: Any, s2: float, scan: Any, scan_reverse: Any, slices: Any) -> Any:
    """:func:`lm_smoother` on a rank whose part of the time axis is empty: it takes part in
    the collectives (an identity element, identity scan summaries, nothing to send back)."""
    xp = array_namespace(F, c)
    _covariance_before(_Ops(xp, F.ndim == 4, c.shape[-1], c.dtype), F, s2, slices)
    scan(F, c, xp.zeros((c.shape[0], c.shape[-1]), dtype=c.dtype))
    slices.halo_back(None, None)
    return scan_reverse(F, c)


def _covariance_before(ops: _Ops, F: Any, s2: float, slices: Any) -> Any:
    """The filter covariance before this rank's slice: the composite elements of the slices
    before it applied to :math:`P_0 = 0` (one ``allgather`` of O(D²) per rank; the last rank
    sends none, nobody after it needs one)."""
    element = None
    if slices.rank + 1 < slices.size:
        element = _slice_element(np.asarray(to_numpy(F)), s2)
    parts = slices.gather(element)
    P = ops.xp.zeros((F.shape[0], *F.shape[2:]), dtype=F.dtype)
    for part in parts[: slices.rank]:
        P = _apply_element(ops, tuple(ops.xp.asarray(x) for x in part), P)
    return P if F.shape[1] else None
