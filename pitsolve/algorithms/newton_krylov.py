r"""Matrix-free Newton–Krylov over the whole trajectory.

Each Newton step solves :math:`J_F\,\delta = -r` inexactly with restarted GMRES, where

.. math::

    (J_F v)_t = v_t - J_t v_{t-1}, \qquad v_0 = 0,

uses only the model's hand-derived JVP :math:`J_t v_{t-1}`. The preconditioner is the
quasi-DEER operator (identity minus the diagonal sub-diagonal), whose inverse is one diagonal
scan. The inner tolerance follows Eisenstat & Walker (1996), choice 2:
:math:`\eta_k = \gamma (\|r_k\| / \|r_{k-1}\|)^2`, safeguarded. No (T, D, D) array is ever
allocated: memory is O(T·D·restart). GMRES is SciPy's on NumPy arrays and CuPy's on CuPy arrays.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..kernels import affine_scan
from ..problems import RecurrenceProblem
from ..solve import Algorithm, Controls, register
from .base import select_backend
from .deer import NewtonState

__all__ = ["NewtonKrylov"]

_FORCING = ("eisenstat-walker", "constant")
_PRECONDITIONERS = ("diagonal-scan", "none")


@dataclasses.dataclass(frozen=True, kw_only=True)
class NewtonKrylov(Algorithm):
    """Inexact Newton with GMRES on matrix-free Jacobian-vector products.

    Parameters
    ----------
    restart
        GMRES restart length (Krylov vectors kept; memory ≈ restart · T · D numbers).
    max_krylov
        inner iterations at most per Newton step.
    forcing
        ``"eisenstat-walker"`` (adaptive inner tolerance) or ``"constant"`` (``eta``).
    eta
        initial (EW) or fixed (constant) relative inner tolerance.
    preconditioner
        ``"diagonal-scan"`` (quasi-DEER inverse, one diagonal scan) or ``"none"``.
    backend, chunk_size
        kernels of the preconditioner scan.
    divergence_factor
        report ``Diverged`` when the residual exceeds this multiple of the best.
    """

    restart: int = 20
    max_krylov: int = 200
    forcing: str = "eisenstat-walker"
    eta: float = 0.1
    preconditioner: str = "diagonal-scan"
    backend: str = "auto"
    chunk_size: int | None = None
    divergence_factor: float = 1e6

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.forcing not in _FORCING:
            raise ValueError(f"forcing must be one of {_FORCING}, got {self.forcing!r}")
        if self.preconditioner not in _PRECONDITIONERS:
            raise ValueError(
                f"preconditioner must be one of {_PRECONDITIONERS}, got {self.preconditioner!r}"
            )
        for name in ("restart", "max_krylov"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be an integer ≥ 1, got {v!r}")
        if not 0 < self.eta < 1:
            raise ValueError(f"eta must lie in (0, 1), got {self.eta}")


def _gmres(xp: Any) -> Any:
    if xp.__name__ == "cupy":  # pragma: no cover - needs a GPU
        from cupyx.scipy.sparse.linalg import LinearOperator, gmres
    else:
        from scipy.sparse.linalg import LinearOperator, gmres
    return LinearOperator, gmres


class NewtonKrylovSolve(NewtonState):
    """State of a Newton–Krylov solve; see :class:`NewtonKrylov`."""

    def __init__(self, problem: RecurrenceProblem, algorithm: NewtonKrylov, controls: Controls):
        super().__init__(problem, algorithm, controls)
        backend = select_backend(problem, algorithm.backend, controls.backend)
        self.kernel = "numba" if backend == "numba" else "numpy"
        self.stats.extra.update(kernel=self.kernel, adjoint="matrix-free")
        self.eta = algorithm.eta
        self.last_norm: float | None = None

    def step(self) -> None:
        xp, alg, model = self.xp, self.algorithm, self.model
        start = self.start
        prev, x = self.previous(self.h, start), self.inputs(start)
        self.stats.function_evals += 1
        if alg.preconditioner == "diagonal-scan":
            f_prev, d = model.f_and_diagonal_jacobian(prev, x)
            self.stats.jacobian_evals += 1
        else:
            f_prev, d = model.f(prev, x), None
        converged = self.test(f_prev)
        if converged is None:
            return
        first = self.freeze(converged)
        if first:
            f_prev = f_prev[..., first:, :]
            d = None if d is None else d[..., first:, :]
        start = self.start
        prev, x = self.previous(self.h, start), self.inputs(start)
        r = self.h[..., start:, :] - f_prev
        shape, n = r.shape, r.size
        dtype = r.dtype

        def jvp_F(v: Any) -> Any:
            v = v.reshape(shape)
            v_prev = xp.concatenate([xp.zeros_like(v[..., :1, :]), v[..., :-1, :]], axis=-2)
            self.stats.jvp_evals += 1
            return (v - model.jvp(prev, x, v_prev)).ravel()

        def precondition(y: Any) -> Any:
            y = y.reshape(shape)
            zero = xp.zeros(shape[:-2] + shape[-1:], dtype=dtype)
            self.stats.scans += 1
            out = affine_scan(d, y, zero, kernel=self.kernel, chunk_size=alg.chunk_size)
            return out.ravel()

        LinearOperator, gmres = _gmres(xp)
        A = LinearOperator((n, n), matvec=jvp_F, dtype=dtype)
        M = LinearOperator((n, n), matvec=precondition, dtype=dtype) if d is not None else None
        norm = float(xp.linalg.norm(r))
        eta = self.forcing(norm)
        inner = [0]

        def count(_: Any) -> None:
            inner[0] += 1

        maxiter = max(1, -(-alg.max_krylov // alg.restart))
        delta, _ = gmres(
            A, -r.ravel(), rtol=eta, atol=0.0, restart=alg.restart, maxiter=maxiter, M=M,
            callback=count, callback_type="pr_norm",
        )
        self.stats.krylov_iterations += inner[0]
        work = (alg.restart + 4) * r.nbytes + 3 * self.h.nbytes
        self.stats.peak_bytes = max(self.stats.peak_bytes, int(work))
        self.accept(self.h[..., start:, :] + delta.reshape(shape).astype(dtype, copy=False))

    def forcing(self, norm: float) -> float:
        """The relative inner tolerance η_k (Eisenstat–Walker choice 2, safeguarded)."""
        alg = self.algorithm
        if alg.forcing == "constant" or self.last_norm is None or self.last_norm == 0:
            eta = self.eta
        else:
            gamma, eta_max = 0.9, 0.9
            eta = gamma * (norm / self.last_norm) ** 2
            safeguard = gamma * self.eta**2
            if safeguard > 0.1:
                eta = max(eta, safeguard)
            eta = min(eta, eta_max)
        # never ask for more than the outer tolerance needs, nor less than round-off permits
        floor = 10 * float(np.finfo(self.problem.dtype).eps)
        self.eta = max(eta, floor)
        self.last_norm = norm
        return self.eta


register(RecurrenceProblem, NewtonKrylov)(NewtonKrylovSolve)
