"""The sequential reference algorithm, and its solver for nonlinear recurrences."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from ..adjoint import BPTTAdjoint, ScanAdjoint
from ..backends import BACKENDS
from ..models.base import step_loop
from ..parallel.slices import TimeSlices
from ..problems import RecurrenceProblem
from ..solution import ReturnCode
from ..solve import Algorithm, Controls, SolverState, register
from ._memory import call_with_peak, kind_of_call

__all__ = ["Sequential"]

_BACKENDS = ("auto", *BACKENDS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Sequential(Algorithm):
    """Step the recurrence one time step after another: O(T) depth, the reference.

    With the Numba backend (the default on NumPy arrays) built-in models run a compiled step
    loop, so this is the baseline a user would write by hand, not a Python loop; their
    gradients (``sol.vjp``) are then the compiled backward loop (BPTT). On the other
    backends the gradient is one transposed scan of the Jacobians.

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
    """h_t = f(h_{t-1}, x_t) for t = 1..T, in one step. On a time axis split over ranks, a
    pipeline: each rank waits for the last state of the rank before, runs its slice and
    passes its last state on (O(T) depth: the fallback of the parallel solvers)."""

    def __init__(self, problem: RecurrenceProblem, algorithm: Sequential, controls: Controls):
        super().__init__(problem, algorithm, controls)
        # the model's backward loop where the forward loop is compiled (a duck-typed model
        # without ``bptt`` aside); elsewhere BPTT is a Python loop over t, and one transposed
        # scan of all Jacobians is faster
        self.slices = TimeSlices(problem.comm)
        bptt = self.backend.compiled and hasattr(problem.model, "bptt") and not self.slices.split
        self.adjoint = BPTTAdjoint() if bptt else ScanAdjoint()

    def step(self) -> None:
        p = self.problem
        model = self.backend.bind(p.working_model())
        # a duck-typed model without ``sequential``: the generic loop
        sequential = getattr(model, "sequential", None) or functools.partial(step_loop, model)
        rows = p.T * int(np.prod(p.batch_shape, dtype=np.int64))
        states, nbytes = call_with_peak(kind_of_call("sequential", p, self.backend, model), rows,
                                        lambda: sequential(self.slices.receive(p.h0),
                                                           p.inputs, p.T))
        self.slices.send(states[..., -1, :])
        self.states = states
        self.stats.function_evals += 1
        self.stats.peak_bytes = int(nbytes)
        finite = self.slices.all(bool(self.xp.isfinite(states).all()))
        self.retcode = ReturnCode.Success if finite else ReturnCode.NonFinite
        self.done = True


register(RecurrenceProblem, Sequential, name="sequential")(SequentialSolve)
