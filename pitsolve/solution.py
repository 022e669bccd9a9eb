"""Results of a solve: the :class:`Solution`, its :class:`ReturnCode` and statistics."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ReturnCode", "Solution", "SolverError", "Stats", "is_successful"]


class ReturnCode(enum.Enum):
    """How a solve ended. ``str(code)`` is an actionable message: what happened, why, what to do.

    Test success only with :func:`is_successful`.
    """

    Success = "converged: the residual met the tolerance."
    MaxIters = (
        "stopped at maxiter before the residual met the tolerance; the best iterate is returned. "
        "Raise maxiter, loosen rtol/atol, warm-start with h_init, or use a damped or forced "
        "variant (DEER(damping=LevenbergMarquardt()), GTF) if the recurrence is not contracting."
    )
    Diverged = (
        "diverged: the residual grew instead of shrinking (typical for expanding/chaotic "
        "dynamics, where the linearised problems are ill-conditioned in T); the best iterate is "
        "returned. Use damping (LineSearch, LevenbergMarquardt), teacher forcing (GTF), shorter "
        "windows (Schwarz), or fallback='sequential'."
    )
    NonFinite = (
        "non-finite values (NaN or Inf) appeared in the iterate or the model output; the best "
        "finite iterate is returned. Check the model parameters and inputs for overflow, use "
        "damping, or fallback='sequential'."
    )
    Stalled = (
        "stalled: the iterate stopped changing before the residual met the tolerance (the "
        "tolerance may be below what this floating-point precision can reach); use float64 or "
        "loosen rtol/atol."
    )
    Terminated = (
        "stopped by the callback (it returned True) before the residual met the tolerance; "
        "the best iterate so far is returned. Continue from it with h_init=sol.states."
    )
    Failure = (
        "the solver stopped without reaching a result (no iteration completed); no iterate "
        "is available. Check the problem and the algorithm's options."
    )

    def __str__(self) -> str:
        return f"ReturnCode.{self.name}: {self.value}"

    @property
    def message(self) -> str:
        """The actionable message of this code."""
        return self.value


def is_successful(sol_or_code: Solution | ReturnCode) -> bool:
    """True if a solution (or a return code) reports success. The only test for success."""
    code = sol_or_code.retcode if isinstance(sol_or_code, Solution) else sol_or_code
    if not isinstance(code, ReturnCode):
        raise TypeError(f"expected a Solution or ReturnCode, got {type(sol_or_code).__name__}")
    return code is ReturnCode.Success


class SolverError(RuntimeError):
    """Raised by ``solve(..., throw=True)`` when a solve does not succeed; carries the solution."""

    def __init__(self, solution: Solution):
        self.solution = solution
        super().__init__(str(solution.retcode))


@dataclass
class Stats:
    """Counters and timings of a solve.

    Attributes
    ----------
    iterations
        outer iterations (Newton / sweeps); 0 for direct methods.
    residual_history
        max-norm residual before each iteration (nonlinear solves).
    function_evals, jacobian_evals, jvp_evals
        model evaluations, each counting a whole trajectory.
    scans
        affine scans performed.
    krylov_iterations
        inner Krylov iterations in total.
    wall_time
        seconds spent in the solve.
    peak_bytes
        bytes of all the arrays the solve holds at its peak (the iterate and every work array
        it allocates, the model's temporaries during an evaluation included; not the caller's
        ``out=`` array).
    extra
        algorithm-specific entries (e.g. ``"fallback"``, per-window statistics), for reporting
        only: nothing reads them to compute.
    """

    iterations: int = 0
    residual_history: list[float] = field(default_factory=list)
    function_evals: int = 0
    jacobian_evals: int = 0
    jvp_evals: int = 0
    scans: int = 0
    krylov_iterations: int = 0
    wall_time: float = 0.0
    peak_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def __getitem__(self, key: str) -> Any:
        if key in self.extra:
            return self.extra[key]
        return getattr(self, key)

    def as_dict(self) -> dict[str, Any]:
        """All statistics as a plain dictionary (for logs and ``report.json``)."""
        out = {k: v for k, v in self.__dict__.items() if k != "extra"}
        out.update(self.extra)
        return out


@dataclass
class Solution:
    """The result of :func:`pitsolve.solve`.

    Attributes
    ----------
    states
        array ``(..., T, D)``, the same array type and dtype as the problem's inputs.
    retcode
        how the solve ended (:class:`ReturnCode`); test with :func:`is_successful`.
    stats
        :class:`Stats`.
    problem, algorithm
        what was solved, and how.
    converged
        per-batch-element flags (array of shape ``batch``) where the algorithm reports
        them, else ``None``.
    jacobians
        the Jacobians :math:`J_t = \\partial f/\\partial h\\,(h_{t-1}, x_t)` at the returned
        trajectory, ``(..., T, D, D)`` (or ``(..., T, D)`` for diagonal models), where the
        solver evaluated them there anyway (a successful DEER solve with exact Jacobians),
        else ``None``. :meth:`vjp` reuses them instead of evaluating them again. A solver
        may set a function instead (:meth:`defer_jacobians`): it runs on first access, so
        that a solve whose Jacobians are never used never assembles them.
    backend
        the :class:`~pitsolve.backends.Backend` the solve ran on; the adjoint runs there too.
    adjoint
        the adjoint rule :meth:`vjp` applies (:mod:`pitsolve.adjoint`:
        :class:`~pitsolve.adjoint.ScanAdjoint`, :class:`~pitsolve.adjoint.MatrixFreeAdjoint`
        or :class:`~pitsolve.adjoint.BPTTAdjoint`), set by the algorithm that produced the
        solution.
    """

    states: Any
    retcode: ReturnCode
    stats: Stats
    problem: Any
    algorithm: Any
    converged: Any = None
    jacobians: Any = None
    backend: Any = None
    adjoint: Any = None

    @property
    def rows(self) -> tuple[int, int]:
        """The global steps ``(start, stop)`` of :attr:`states`: this rank's slice for a
        problem whose time axis is split over ranks (``comm=``), else ``(0, T)``."""
        rows = getattr(self.problem, "rows", None)
        return tuple(rows) if rows is not None else (0, int(self.states.shape[-2]))

    def defer_jacobians(self, assemble: Callable[[], Any]) -> None:
        """Let ``assemble()`` compute :attr:`jacobians` (an array or None) on first access."""
        self._assemble = assemble

    def __getattribute__(self, name: str) -> Any:
        if name == "jacobians":
            assemble = self.__dict__.pop("_assemble", None)
            if assemble is not None:
                object.__setattr__(self, name, assemble())
        return object.__getattribute__(self, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "jacobians":  # an explicit value replaces a deferred one
            self.__dict__.pop("_assemble", None)
        object.__setattr__(self, name, value)

    def vjp(self, g: Any) -> Any:
        """Cotangents of a scalar loss L given ``g = dL/dstates``.

        Returns an object whose attributes are the cotangents of the problem's inputs:
        ``.A``, ``.b``, ``.h0`` for a :class:`~pitsolve.LinearRecurrenceProblem`;
        ``.params`` (a :class:`~pitsolve.models.Params`), ``.h0`` and ``.inputs`` for a
        :class:`~pitsolve.RecurrenceProblem`.

        Raises
        ------
        ValueError
            if the solve did not succeed: the adjoint is the gradient only at the solution
            (an unconverged or non-finite trajectory would give a silently wrong gradient).
        """
        if self.retcode is not ReturnCode.Success:
            raise ValueError(
                f"sol.vjp needs a successful solution, this one ended with {self.retcode.name}: "
                "the adjoint is the gradient only at the converged trajectory; re-solve (e.g. "
                "with fallback='sequential') first"
            )
        if self.adjoint is None:
            raise NotImplementedError(
                f"{self.algorithm!r} gives its solutions no adjoint rule (sol.adjoint is None)"
            )
        return self.adjoint.vjp(self, g)

    def __repr__(self) -> str:
        shape = getattr(self.states, "shape", None)
        return (
            f"Solution(retcode={self.retcode.name}, states.shape={shape}, "
            f"iterations={self.stats.iterations}, algorithm={self.algorithm!r})"
        )
