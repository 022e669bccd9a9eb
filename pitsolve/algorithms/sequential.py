"""The sequential reference algorithm, and its solver for nonlinear recurrences."""

from __future__ import annotations

import dataclasses

from ..models.base import step_loop
from ..problems import RecurrenceProblem
from ..solution import ReturnCode
from ..solve import Algorithm, Controls, SolverState, register
from .base import select_backend

__all__ = ["Sequential"]

_BACKENDS = ("auto", "numba", "numpy", "cupy")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sequential(Algorithm):
    """Step the recurrence one time step after another: O(T) depth, the reference.

    With the Numba backend (the default on NumPy arrays) built-in models run a compiled step
    loop, so this is the baseline a user would write by hand, not a Python loop.

    Parameters
    ----------
    backend
        ``"auto"``, ``"numba"``, ``"numpy"`` (a Python loop over t, vectorised over the
        batch) or ``"cupy"``.
    """

    backend: str = "auto"

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {self.backend!r}")


class SequentialSolve(SolverState):
    """h_t = f(h_{t-1}, x_t) for t = 1..T, in one step."""

    def __init__(self, problem: RecurrenceProblem, algorithm: Sequential, controls: Controls):
        super().__init__(problem, algorithm, controls)
        self.backend = select_backend(problem, algorithm.backend, controls.backend)
        self.stats.extra["adjoint"] = "bptt" if self.backend == "numba" else "scan"

    def step(self) -> None:
        p = self.problem
        model = p.working_model()
        if self.backend == "numba" and hasattr(model, "sequential"):
            states = model.sequential(p.h0, p.inputs, p.T)
        else:
            states = step_loop(model, p.h0, p.inputs, p.T)
        self.states = states
        self.stats.function_evals += 1
        self.stats.peak_bytes = int(states.nbytes)
        finite = bool(p.xp.isfinite(states).all())
        self.retcode = ReturnCode.Success if finite else ReturnCode.NonFinite
        self.done = True


register(RecurrenceProblem, Sequential, name="sequential")(SequentialSolve)
