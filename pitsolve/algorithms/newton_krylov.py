r"""Matrix-free Newton–Krylov over the whole trajectory.

Each Newton step solves :math:`J_F\,\delta = -r` inexactly with restarted GMRES, where

.. math::

    (J_F v)_t = v_t - J_t v_{t-1}, \qquad v_0 = 0,

uses only products with the model's Jacobians :math:`J_t = \partial f/\partial h\,(h_{t-1},
x_t)`. They come from the model's ``linearize`` (:class:`~pitsolve.models.base.Linearization`),
evaluated once per Newton step: for a model that caches its Jacobians' factors there (Elman:
:math:`1 - y_t^2`), each GMRES iteration costs one matrix product over all steps and no
evaluation of f. The preconditioner is the quasi-DEER operator (identity minus the diagonal
sub-diagonal), whose inverse is one diagonal scan. The inner tolerance follows Eisenstat &
Walker (1996), choice 2: :math:`\eta_k = \gamma (\|r_k\| / \|r_{k-1}\|)^2`, safeguarded. No
(T, D, D) array is ever allocated.

**Memory and windows.** GMRES keeps ``restart + 1`` Krylov vectors of the size of the
trajectory, and the step needs about ten more (the right-hand side, the preconditioner's
diagonals, the cached linearization, GMRES's solution, residual and work vectors, the best
iterate). To bound this, the time axis is solved in consecutive *windows* of L steps, each by
Newton–Krylov from the converged end state of the window before: exact by causality (the steps
of a window depend only on earlier steps), and every step's residual meets the same tolerance
as in a whole-trajectory solve. Work arrays are then O(L·D·restart), independent of T;
L follows from ``max_bytes`` unless ``window`` sets it. The operator is the
:class:`~pitsolve.operators.TrajectoryJacobian` that the matrix-free adjoint
(:class:`~pitsolve.adjoint.MatrixFreeAdjoint`, in the same windows) applies transposed, and
GMRES is the backend's (:func:`pitsolve.kernels.krylov.gmres`: ``max_krylov`` counts inner
iterations on every backend).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..adjoint import MatrixFreeAdjoint
from ..backends import BACKENDS
from ..operators import TrajectoryJacobian
from ..problems import RecurrenceProblem
from ..solve import Algorithm, Controls, register
from .newton import NewtonState, Windowed

__all__ = ["NewtonKrylov"]

_BACKENDS = ("auto", *BACKENDS)
_FORCING = ("eisenstat-walker", "constant")
_PRECONDITIONERS = ("diagonal-scan", "none")

#: window-sized work arrays of one Newton step besides the Krylov basis: best iterate,
#: right-hand side, preconditioner diagonals, cached linearization, and in GMRES the solution,
#: the residual, A·v, M⁻¹A·v and one Gram–Schmidt temporary, plus one spare.
_WORK_ARRAYS = 10


@dataclasses.dataclass(frozen=True, kw_only=True)
class NewtonKrylov(Algorithm, Windowed):
    r"""Inexact Newton with GMRES on matrix-free Jacobian-vector products.

    Parameters
    ----------
    restart
        GMRES restart length (Krylov vectors kept).
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
    window
        solve the time axis in consecutive windows of this many steps (None: from
        ``max_bytes``). Each window is solved from the converged end state of the one before.
    max_bytes
        memory for the work arrays, the trajectory itself not counted. With ``window=None``
        the time axis is cut into the fewest windows of (nearly) equal length L with
        :math:`(\text{restart} + 1 + 10)\cdot B\cdot L\cdot D\cdot\text{itemsize} \le`
        ``max_bytes`` (B the batch size; L ≥ 1 step; :meth:`work_bytes_per_step`); None: one
        window of T steps.

    Notes
    -----
    ``stats.peak_bytes`` counts the trajectory and every array a Newton step holds (measured,
    see ``pitsolve.algorithms._memory``), and ``stats["windows"]``, ``stats["window"]`` the
    number and length of the windows; ``maxiter`` bounds the Newton iterations of each
    window.

    Measured on the ``elman_256`` benchmark (D = 256, float64, rtol 1e-8, defaults;
    ``python benchmarks/deer.py --memory``; shared 2-core VM, 2026-12-03, pitsolve's GMRES):

    ======  ============  =====================  ==============  ======================
    T       windows       Newton (Krylov) its.   max RSS         ``stats.peak_bytes``
    ======  ============  =====================  ==============  ======================
    10⁴     2 × 5000      10 (125)               558 MB          338 MB
    10⁵     12 × 8334     60 (745)               991 MB          734 MB
    ======  ============  =====================  ==============  ======================

    (whole process; 199 / 212 MB of it precede the solve; the solve of T = 10⁵ took 71 s,
    89 s with SciPy's GMRES before). Before windows and ``linearize``, one window of
    T = 10⁵ peaked at 7.5 GB; dense DEER would hold 52 GB of Jacobians.
    """

    restart: int = 20
    max_krylov: int = 200
    forcing: str = "eisenstat-walker"
    eta: float = 0.1
    preconditioner: str = "diagonal-scan"
    backend: str = "auto"
    chunk_size: int | None = None
    divergence_factor: float = 1e6
    window: int | None = None
    max_bytes: int | None = 512 * 2**20

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {self.backend!r}")
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
        self.check_windows()

    def work_bytes_per_step(self, problem: RecurrenceProblem) -> int:
        """Bytes of work arrays per time step of a window (batch included)."""
        B = int(np.prod(problem.batch_shape, dtype=int))
        itemsize = np.dtype(problem.dtype).itemsize
        return (self.restart + 1 + _WORK_ARRAYS) * B * problem.D * itemsize


class NewtonKrylovSolve(NewtonState):
    """State of a Newton–Krylov solve; see :class:`NewtonKrylov`."""

    writes_out = True

    def __init__(self, problem: RecurrenceProblem, algorithm: NewtonKrylov, controls: Controls):
        super().__init__(problem, algorithm, controls)
        self.adjoint = MatrixFreeAdjoint(window=self.window)
        self.reset_forcing()

    def advance_window(self) -> None:
        super().advance_window()
        self.reset_forcing()  # a new window is a new Newton solve

    def reset_forcing(self) -> None:
        """Start the Eisenstat–Walker sequence afresh (a new window is a new Newton solve)."""
        self.eta = self.algorithm.eta
        self.last_norm: float | None = None

    def evaluate(self) -> tuple[Any, Any]:
        """f(h_{t-1}) on the active segment and, with the preconditioner, diag J_t."""
        model, start = self.model, self.start
        prev, x = self.previous(self.h, start), self.inputs(start)
        self.stats.function_evals += 1
        rows = self.rows(prev.shape[-2])
        if self.algorithm.preconditioner == "diagonal-scan":
            self.stats.jacobian_evals += 1
            return self.measured("eval:diagonal", rows,
                                 lambda: model.f_and_diagonal_jacobian(prev, x))
        return self.measured("eval:none", rows, lambda: model.f(prev, x)), None

    def step(self) -> None:
        first, evaluated = self.evaluate_and_test(self.evaluate)
        if first is None:
            return
        f_prev, d = evaluated
        del evaluated
        first = self.freeze(first)
        if first:
            f_prev = f_prev[..., first:, :]
            d = None if d is None else d[..., first:, :]
        rhs = self.take_rhs(first)  # −r
        del f_prev
        delta = self.measured("krylov", self.rows(rhs.shape[-2]),
                              lambda: self.newton_direction(rhs, d), rhs, d)
        delta += self.segment(self.h)
        self.accept(delta)

    def newton_direction(self, rhs: Any, d: Any) -> Any:
        r"""δ with :math:`J_F\,\delta \approx` ``rhs`` (= −r) on the active segment, by GMRES to
        the relative tolerance η_k; ``d`` the diagonals of the preconditioner (or None)."""
        alg = self.algorithm
        x = self.inputs(self.start)
        if self.stop - self.start > 1:
            self.stats.jacobian_evals += 1  # the linearisation (J of the first step is unused)
        op = TrajectoryJacobian(self.model, self.previous(self.h, self.start), x, self.backend,
                                diagonal=d, chunk_size=alg.chunk_size,
                                slices=self.slices if self.slices.split else None)
        norm = float(self.xp.linalg.norm(rhs))
        if self.slices.split:  # ‖r‖ over all ranks
            norm = float(np.sqrt(self.slices.sum(norm * norm)))
        eta = self.forcing(norm)
        result = op.solve(rhs, rtol=eta, restart=alg.restart, maxiter=alg.max_krylov,
                          precondition=d is not None)
        self.stats.jvp_evals += op.products
        self.stats.scans += op.scans
        self.stats.krylov_iterations += result.iterations
        return result.x.astype(rhs.dtype, copy=False)

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
