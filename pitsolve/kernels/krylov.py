r"""Restarted GMRES on any array namespace, with one meaning of its iteration limit.

Solves :math:`A x = b` for a linear operator given as ``matvec``, left-preconditioned by
``psolve`` (:math:`M \approx A^{-1}`): GMRES(m) minimises :math:`\|M(b - A x)\|_2` over the
Krylov space :math:`x_0 + \mathcal K_k(MA, M r_0)` and restarts every m iterations from the
current x. The Arnoldi vectors are orthogonalised by classical Gram–Schmidt with one
re-orthogonalisation (CGS2: as accurate as modified Gram–Schmidt, but two matrix–vector
products per iteration instead of k dot products, so it runs as BLAS-2 on a CPU and as two
kernels on a GPU); the small least-squares problem is solved by Givens rotations on the host.

Stopping: the true residual :math:`\|b - A x\|_2 \le \mathrm{rtol}\,\|b\|_2`, tested at the
start of every cycle; within a cycle, the preconditioned residual estimate of the Arnoldi
relation ends the cycle early once it meets the same relative tolerance (tightened if the
true residual then still misses). ``maxiter`` counts *inner* iterations (products with A) in
total over all cycles, on every backend: SciPy counts restart cycles, CuPy inner iterations;
this function is what every :class:`~pitsolve.backends.Backend` runs, so a limit means the
same on a CPU and a GPU.

With ``total`` the vectors are split over processes (a time axis split over MPI ranks): each
process holds a part of every vector, and ``total`` sums an array of partial inner products
over the processes. Every inner product and norm goes through it (the two Gram–Schmidt passes
are one sum each), so every process computes the same Hessenberg matrix, the same rotations
and the same stopping decisions.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np

from .._arrays import array_namespace, to_numpy

__all__ = ["KrylovResult", "gmres"]


class KrylovResult(NamedTuple):
    """``x``, whether the tolerance was met, and the inner iterations (products with A)."""

    x: Any
    converged: bool
    iterations: int


def _norm(xp: Any, v: Any, total: Any = None) -> float:
    if total is None:
        return float(xp.linalg.norm(v))
    return math.sqrt(float(total(np.asarray(float(to_numpy(xp.vdot(v, v)).real)))))


def _dots(basis: Any, w: Any, total: Any) -> Any:
    """The inner products of the rows of ``basis`` with ``w`` (over all processes)."""
    h = basis @ w
    if total is None:
        return h
    return array_namespace(h).asarray(total(to_numpy(h)), dtype=h.dtype)


def _rotation(a: float, b: float) -> tuple[float, float, float]:
    """``(c, s, r)`` with ``[c s; -s c] [a; b] = [r; 0]``."""
    if b == 0.0:
        return 1.0, 0.0, a
    r = math.hypot(a, b)
    return a / r, b / r, r


def gmres(
    matvec: Callable[[Any], Any],
    b: Any,
    *,
    psolve: Callable[[Any], Any] | None = None,
    rtol: float = 1e-5,
    restart: int = 20,
    maxiter: int | None = None,
    total: Callable[[np.ndarray], np.ndarray] | None = None,
) -> KrylovResult:
    """GMRES(``restart``) for ``matvec(x) = b`` (vectors of shape ``(n,)``), left-preconditioned
    by ``psolve``; at most ``maxiter`` inner iterations in all (default 10 n). Returns a
    :class:`KrylovResult`; ``x`` has the dtype of ``b``. ``total``: the sum over the
    processes holding the other parts of the vectors (None: one process holds them)."""
    xp = array_namespace(b)
    n = b.shape[0] if total is None else int(total(np.asarray(b.shape[0])))
    x = xp.zeros_like(b)
    b_norm = _norm(xp, b, total)
    if b_norm == 0.0:
        return KrylovResult(x, True, 0)
    M = psolve if psolve is not None else (lambda v: v)
    m = max(1, min(int(restart), n))
    maxiter = 10 * n if maxiter is None else int(maxiter)
    tol = rtol * b_norm
    eps = float(np.finfo(b.dtype).eps)
    # the inner (preconditioned) tolerance, tightened if needed
    ptol = _norm(xp, M(b), total) * rtol
    V = xp.empty((m + 1, b.shape[0]), dtype=b.dtype)
    H = np.zeros((m + 1, m))
    rotations = np.zeros((m, 2))
    r = b.copy()
    iterations = 0
    while True:
        r_norm = _norm(xp, r, total)
        if r_norm <= tol:
            return KrylovResult(x, True, iterations)
        if iterations >= maxiter:
            return KrylovResult(x, False, iterations)
        z = M(r)
        beta = _norm(xp, z, total)
        if not beta > 0.0:  # the preconditioner annihilates the residual (or it is not finite)
            return KrylovResult(x, False, iterations)
        V[0] = z / beta
        g = np.zeros(m + 1)
        g[0] = beta
        k = 0
        presid = beta
        for j in range(m):
            if iterations >= maxiter:
                break
            w = M(matvec(V[j]))
            basis = V[: j + 1]
            h = _dots(basis, w, total)  # classical Gram–Schmidt, twice (CGS2)
            w -= h @ basis
            h2 = _dots(basis, w, total)
            w -= h2 @ basis
            h = to_numpy(h + h2).astype(np.float64)
            w_norm = _norm(xp, w, total)
            iterations += 1
            k = j + 1
            H[: j + 1, j] = h
            H[j + 1, j] = w_norm
            lucky = w_norm <= eps * float(np.abs(h).max(initial=0.0))
            if not lucky:
                V[j + 1] = w / w_norm
            for i in range(j):  # the earlier rotations, applied to the new column
                c, s = rotations[i]
                H[i, j], H[i + 1, j] = c * H[i, j] + s * H[i + 1, j], -s * H[i, j] + c * H[i + 1, j]
            c, s, H[j, j] = _rotation(H[j, j], H[j + 1, j])
            H[j + 1, j] = 0.0
            rotations[j] = c, s
            g[j], g[j + 1] = c * g[j], -s * g[j]
            presid = abs(g[j + 1])
            if presid <= ptol or lucky or not math.isfinite(presid):
                break
        if k == 0:
            return KrylovResult(x, False, iterations)
        y = np.zeros(k)
        for i in range(k - 1, -1, -1):  # back substitution with the rotated Hessenberg matrix
            y[i] = (g[i] - H[i, i + 1 : k] @ y[i + 1 :]) / H[i, i] if H[i, i] != 0.0 else 0.0
        x += xp.asarray(y, dtype=b.dtype) @ V[:k]
        r = b - matvec(x)
        if presid <= ptol:  # the estimate met the tolerance: tighten it if the truth did not
            ptol = presid * min(0.25, tol / max(_norm(xp, r, total), tol))
