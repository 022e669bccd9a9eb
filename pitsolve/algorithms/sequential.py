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
from ._memory import call_with_peak, kind_of_call, time_chunks

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
    passes its last state on (O(T) depth: the fallback of the parallel solvers). With
    ``out=`` the loop runs in chunks of the time axis (``OUT_CHUNK_BYTES`` of states), each
    from the last state of the one before, written into ``out`` as they come: the same
    states in bounded memory (to round-off where a model's loop batches work over its
    steps, such as Elman's input projections)."""

    writes_out = True

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
        B = int(np.prod(p.batch_shape, dtype=np.int64))
        key = kind_of_call("sequential", p, self.backend, model)
        h0 = self.slices.receive(p.h0)
        if self.out is None:
            states, nbytes = call_with_peak(key, p.T * B, lambda: sequential(h0, p.inputs, p.T))
            finite = bool(self.xp.isfinite(states).all())
        else:
            states, nbytes, finite = self.out, 0, True
            step_bytes = B * p.D * np.dtype(p.dtype).itemsize
            for a, b in time_chunks(p.T, step_bytes):
                x = None if p.inputs is None else p.inputs[..., a:b, :]
                part, used = call_with_peak(
                    key, (b - a) * B, functools.partial(sequential, h0, x, b - a))
                states[..., a:b, :] = part
                h0, nbytes = part[..., -1, :], max(nbytes, used)
                finite = finite and self.backend.all_finite(part)
        self.slices.send(states[..., -1, :])
        self.states = states
        self.stats.function_evals += 1
        self.stats.peak_bytes = int(nbytes)
        finite = self.slices.all(finite)
        self.retcode = ReturnCode.Success if finite else ReturnCode.NonFinite
        self.done = True


register(RecurrenceProblem, Sequential, name="sequential")(SequentialSolve)
