r"""Schwarz-type overlapping decomposition in time: the forward solve (MATH.md §7).

The time axis is cut into P windows that overlap their left neighbour by δ steps; each step is
owned by one window (restricted additive Schwarz). Sweep k, all windows at once (Jacobi):

.. math::

    h^{(p)}_{s_p - 1} \leftarrow h^{(p-1,\,k-1)}_{s_p - 1}, \qquad
    h^{(p,\,k)} = \text{local solve of } h_t = f(h_{t-1}, x_t) \text{ on } [s_p, e_p),

with :math:`h_0` for the first window and, in the first sweep, a guess (``h_init`` or
:math:`h_0`) for the others. Neighbours exchange one state vector per sweep. A window whose
incoming state changed re-solves only a prefix of doubling length until the new trajectory
agrees with the previous sweep's to tolerance (a deterministic recurrence that meets its old
trajectory follows it from there on); the rest of the window is already right.

By causality window p is exact after sweep p (with ``max_sweeps = P`` the result equals the
sequential one up to the merge tolerance). For a contracting recurrence the error of a wrong
initial state shrinks like :math:`\rho^{\delta}` across the overlap (ρ = sup‖J_t‖), so when δ
exceeds the memory length the owned parts are right after the first sweep and every later
sweep only re-solves short prefixes inside the overlaps. Termination needs no global
reduction: window p knows it is final after sweep p (a flag that travels left to right with
the boundary states); in one process the solve also stops at the first sweep in which no
window had to work, which changes no number.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..parallel import ENGINES, Engine, Partition, make_engine
from ..problems import RecurrenceProblem
from ..solution import ReturnCode
from ..solve import Algorithm, Controls, SolverState, register, solve
from .sequential import Sequential

__all__ = ["Schwarz", "engine_of"]

_GATHER = ("all", "local")


@dataclasses.dataclass(frozen=True, kw_only=True)
class Schwarz(Algorithm):
    """Overlapping windows in time, solved concurrently by an inner algorithm.

    Parameters
    ----------
    windows
        number of windows P (near-equal owned lengths), or the ``P - 1`` interior boundaries
        ``0 < b_1 < … < b_{P-1} < T`` (window p owns steps ``b_p .. b_{p+1} - 1``).
    overlap
        δ, the steps a window solves before the ones it owns; must be smaller than every
        owned length. Make it longer than the memory length of the recurrence
        (≈ log(tolerance) / log ρ for contraction factor ρ).
    inner
        the algorithm of the local solves: :class:`Sequential` (default), :class:`DEER`,
        :class:`NewtonKrylov`, … (not another Schwarz).
    max_sweeps
        sweeps at most; default P (exact by causality). Fewer sweeps return ``MaxIters``
        unless no window had to work in the last one.
    engine
        ``"serial"``, ``"threads"`` or ``"mpi"``; numbers do not depend on it. A configured
        engine (``MPIEngine(comm)``, a shared ``ThreadEngine``) is a live resource and goes
        to :func:`~pitsolve.solve` as the control ``engine=``.
    workers
        threads of the ``"threads"`` engine (default: the CPU count).
    gather
        ``"all"``: every process gets the whole trajectory (``sol.states`` of shape
        ``(..., T, D)``); ``"local"`` (MPI): each rank keeps the rows its windows own,
        ``sol.states[..., i, :]`` being row ``stats["schwarz"]["rows"][0] + i``.
    comm, objective, mu, sync
        deprecated (removed in the next release): ``comm`` → the solve control
        ``engine=MPIEngine(comm)``; ``objective``, ``mu``, ``sync`` → ``fit(...,
        objective=LocalObjective(mu=..., sync=...))`` (:mod:`pitsolve.training.objectives`).
        An :class:`~pitsolve.parallel.Engine` instance as ``engine`` is deprecated likewise.
    """

    windows: int | Sequence[int] = 8
    overlap: int = 64
    inner: Algorithm = dataclasses.field(default_factory=Sequential)
    max_sweeps: int | None = None
    engine: str | Engine = "serial"
    workers: int | None = None
    gather: str = "all"
    comm: Any = dataclasses.field(default=None, repr=False)
    objective: str | None = dataclasses.field(default=None, repr=False)
    mu: float | None = dataclasses.field(default=None, repr=False)
    sync: str | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.inner, Algorithm) or isinstance(self.inner, Schwarz):
            raise TypeError(
                f"inner must be a pitsolve algorithm other than Schwarz (e.g. ps.Sequential(), "
                f"ps.DEER()), got {self.inner!r}"
            )
        if not isinstance(self.windows, int) or isinstance(self.windows, bool):
            object.__setattr__(self, "windows", tuple(self.windows))
        elif self.windows < 1:
            raise ValueError(f"windows must be ≥ 1, got {self.windows}")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, int):
            raise TypeError(f"overlap must be an integer, got {self.overlap!r}")
        if self.overlap < 0:
            raise ValueError(f"overlap must be ≥ 0, got {self.overlap}")
        if self.max_sweeps is not None and (
            isinstance(self.max_sweeps, bool)
            or not isinstance(self.max_sweeps, int)
            or self.max_sweeps < 1
        ):
            raise ValueError(
                f"max_sweeps must be None or a positive integer, got {self.max_sweeps!r}"
            )
        if isinstance(self.engine, Engine) or self.comm is not None:
            warnings.warn(
                "Schwarz(engine=<Engine>) and Schwarz(comm=...) are deprecated: name the engine "
                "(engine='mpi') and pass a configured one to solve as the control "
                "engine=MPIEngine(comm)",
                DeprecationWarning,
                stacklevel=3,
            )
        elif self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        training = {k: getattr(self, k) for k in ("objective", "mu", "sync")}
        if any(v is not None for v in training.values()):
            warnings.warn(
                "Schwarz(objective=..., mu=..., sync=...) are deprecated training options: use "
                "fit(..., objective=ps.training.LocalObjective(mu=..., sync=...)) with "
                "solver=Schwarz(...)",
                DeprecationWarning,
                stacklevel=3,
            )
            if training["objective"] not in (None, "global", "local"):
                raise ValueError(
                    f"objective must be 'global' or 'local', got {training['objective']!r}"
                )
        if self.gather not in _GATHER:
            raise ValueError(f"gather must be one of {_GATHER}, got {self.gather!r}")

    def partition(self, T: int) -> Partition:
        """The :class:`~pitsolve.parallel.Partition` of ``T`` steps."""
        if isinstance(self.windows, int):
            return Partition.uniform(T, self.windows, self.overlap)
        return Partition.from_boundaries(T, self.windows, self.overlap)


@dataclasses.dataclass
class _Window:
    """What one window keeps between sweeps."""

    states: Any = None  # (..., n_covered, D)
    boundary: Any = None  # the initial state it last solved from
    retcode: ReturnCode = ReturnCode.Success
    solves: int = 0
    steps: int = 0
    inner_iterations: int = 0
    function_evals: int = 0
    last_work: int = 0  # the last sweep in which the window solved anything
    last_owned_change: int = 0  # ... in which one of its owned rows changed beyond tolerance
    adjoint: Any = None  # the inner solutions' adjoint rule
    peak_bytes: int = 0  # the largest inner solve's


class SchwarzSolve(SolverState):
    """One sweep per :func:`~pitsolve.step`."""

    def __init__(self, problem: RecurrenceProblem, algorithm: Schwarz, controls: Controls):
        super().__init__(problem, algorithm, controls)
        if problem.comm is not None:
            raise ValueError("Schwarz splits the time axis itself (engine='mpi'): give it a "
                             "problem without comm=, or use DEER on the split problem")
        self.partition = algorithm.partition(problem.T)
        self.engine = engine_of(algorithm, controls.engine)
        if algorithm.gather == "local" and self.engine.name != "mpi":
            raise ValueError("gather='local' is for engine='mpi'; other engines gather 'all'")
        self.local = self.engine.local(self.partition)
        self.rtol, self.atol = controls.tolerances(problem.dtype)
        self.sweep_limit = min(algorithm.max_sweeps or self.partition.P, self.partition.P)
        self.windows = {p: _Window() for p in self.local}
        self.sweep = 0
        self.bytes_exchanged = 0
        self.in_process = self.engine.size == 1

    # -- the local solve -------------------------------------------------------------------
    def _solve(self, p: int, h0: Any, offset: int, length: int, guess: Any) -> Any:
        """Solve ``length`` steps of window ``p`` from ``h0``, starting ``offset`` steps in."""
        prob, ctrl, w = self.problem, self.controls, self.windows[p]
        start = self.partition.covered(p)[0] + offset
        x = None if prob.inputs is None else prob.inputs[..., start : start + length, :]
        if guess is None and ctrl.h_init is not None:
            guess = ctrl.h_init[..., start : start + length, :]
        sub = RecurrenceProblem(prob.working_model(), h0, x, T=length)
        sol = solve(
            sub,
            self.algorithm.inner,
            rtol=ctrl.rtol,
            atol=ctrl.atol,
            maxiter=ctrl.maxiter,
            h_init=guess,
            backend=self.backend.name,
            freeze_converged=ctrl.freeze_converged,
        )
        w.solves += 1
        w.steps += length
        w.inner_iterations += sol.stats.iterations
        w.function_evals += sol.stats.function_evals
        w.adjoint = sol.adjoint
        w.peak_bytes = max(w.peak_bytes, sol.stats.peak_bytes)
        w.last_work = self.sweep
        if sol.retcode is not ReturnCode.Success:
            w.retcode = sol.retcode
        return sol.states

    def _first(self, p: int) -> None:
        prob, w = self.problem, self.windows[p]
        row = self.partition.handoff(p)
        if row < 0:
            h0 = prob.h0
        elif self.controls.h_init is not None:
            h0 = self.controls.h_init[..., row, :]
        else:
            h0 = prob.h0
        start, stop = self.partition.covered(p)
        w.boundary = h0
        w.states = self._solve(p, h0, 0, stop - start, None)
        w.last_owned_change = 1

    def _update(self, p: int, h0: Any) -> None:
        """Re-solve window ``p`` from a new initial state until it meets its old trajectory.

        Chunks of doubling length, each continuing from the end of the last, until the end of
        a chunk agrees with the old trajectory to tolerance (or the window ends): the work is
        at most about twice the steps the two trajectories take to merge.
        """
        w = self.windows[p]
        if h0 is None or self._close(h0, w.boundary):
            return
        w.boundary = h0
        if not bool(self.xp.isfinite(h0).all()):
            w.retcode = ReturnCode.NonFinite
            return
        states = w.states
        own = self.partition.owned(p)[0] - self.partition.covered(p)[0]
        n, pos, chunk = states.shape[-2], 0, max(self.partition.overlap, 16)
        while pos < n:
            length = min(chunk, n - pos)
            old_end = states[..., pos + length - 1, :].copy()
            new = self._solve(p, h0, pos, length, states[..., pos : pos + length, :])
            lo = max(own, pos)
            if lo < pos + length and not self._close(
                new[..., lo - pos :, :], states[..., lo : pos + length, :]
            ):
                w.last_owned_change = self.sweep
            states[..., pos : pos + length, :] = new
            pos, h0, chunk = pos + length, new[..., -1, :], 2 * chunk
            if self._close(h0, old_end):
                return

    def _close(self, a: Any, b: Any) -> bool:
        xp = self.xp
        return bool(xp.all(xp.abs(a - b) <= self.atol + self.rtol * xp.abs(b)))

    # -- one sweep -------------------------------------------------------------------------
    def step(self) -> None:
        self.sweep += 1
        part, engine = self.partition, self.engine
        with engine.guard():
            if self.sweep == 1:
                engine.map(self._first, self.local)
            else:
                outgoing = {}
                for p in self.local:
                    if p + 1 < part.P:
                        row = part.handoff(p + 1) - part.covered(p)[0]
                        # a copy: the sender may update its states in place this sweep
                        outgoing[p] = self.windows[p].states[..., row, :].copy()
                        self.bytes_exchanged += int(outgoing[p].nbytes)
                incoming = engine.shift(outgoing, part)
                engine.map(lambda p: self._update(p, incoming[p]), self.local)
        worked = any(w.last_work == self.sweep for w in self.windows.values())
        quiet = self.sweep > 1 and not worked
        if self.sweep >= self.sweep_limit or (quiet and self.in_process):
            self._finish(quiet)

    def terminate(self) -> None:
        """The callback stopped the solve: the windows' trajectories as they stand, with
        ``Terminated`` (a collective under MPI: the callback must agree on every rank)."""
        self._finish(False)
        self.retcode = ReturnCode.Terminated

    def _finish(self, quiet: bool) -> None:
        part, engine = self.partition, self.engine
        with engine.guard():
            parts = {}
            for p in self.local:
                own, cov = part.owned(p), part.covered(p)
                parts[p] = self.windows[p].states[..., own[0] - cov[0] : own[1] - cov[0], :]
            if self.algorithm.gather == "all":
                self.states = engine.gather_time(parts, part)
            elif len(parts) == 1:
                self.states = next(iter(parts.values()))  # a view: no copy for one window
            else:
                self.states = self.xp.concatenate([parts[p] for p in self.local], axis=-2)
            codes = [w.retcode for _, w in sorted(self.windows.items())]
            bad = next((c for c in codes if c is not ReturnCode.Success), None)
            # two reductions at the end, identical on all ranks: the worst window, whether all
            # were quiet (min = -max of the negation), the last sweep with work and the last
            # that changed an owned row (max); the totals (sum)
            order = list(ReturnCode)
            worst, neg_quiet, last, final = (
                int(v)
                for v in engine.allreduce(
                    np.array(
                        [
                            order.index(bad) if bad is not None else -1,
                            -int(quiet),
                            max(w.last_work for w in self.windows.values()),
                            max(w.last_owned_change for w in self.windows.values()),
                        ],
                        dtype=np.int64,
                    ),
                    "max",
                )
            )
            quiet = quiet if self.in_process else neg_quiet == -1
            totals = engine.allreduce(
                np.array(
                    [
                        sum(getattr(w, k) for w in self.windows.values())
                        for k in ("solves", "steps", "inner_iterations", "function_evals")
                    ]
                    + [self.bytes_exchanged],
                    dtype=np.int64,
                )
            )
        if worst >= 0:
            self.retcode = order[worst]
        elif self.sweep >= part.P or quiet:
            self.retcode = ReturnCode.Success
        else:
            self.retcode = ReturnCode.MaxIters
        w0 = next(iter(self.windows.values()))
        solves, steps, inner_its, fevals, nbytes = (int(v) for v in totals)
        self.stats.iterations = max(last, 1)
        self.stats.function_evals = fevals
        # the windows' trajectories, the gathered result, and the inner solves that run at
        # once in this process (one at a time, or one per thread)
        inner = sorted((w.peak_bytes for w in self.windows.values()), reverse=True)
        concurrent = getattr(engine, "workers", 1) if engine.name == "threads" else 1
        self.stats.peak_bytes = int(
            sum(w.states.nbytes for w in self.windows.values())
            + (self.states.nbytes if self.algorithm.gather == "all" else 0)
            + sum(inner[:concurrent])
        )
        self.adjoint = w0.adjoint
        self.stats.extra.update(
            schwarz={
                "windows": part.P,
                "overlap": part.overlap,
                "engine": engine.name,
                "processes": engine.size,
                "sweeps": max(last, 1),
                "sweeps_to_tolerance": final,
                "rounds": self.sweep,
                "local_solves": solves,
                "steps_solved": steps,
                "work_ratio": steps / part.T,
                "inner_iterations": inner_its,
                "bytes_exchanged": nbytes,
                "rows": (part.bounds[self.local[0]], part.bounds[self.local[-1] + 1]),
                "per_window": {
                    p: {
                        "solves": w.solves,
                        "steps": w.steps,
                        "inner_iterations": w.inner_iterations,
                        "retcode": w.retcode.name,
                    }
                    for p, w in sorted(self.windows.items())
                },
            },
        )
        self.done = True


def engine_of(algorithm: Schwarz, engine: Engine | None = None) -> Engine:
    """The engine a solve with ``algorithm`` runs on: ``engine`` (the solve control) if given,
    else one made from the algorithm's options."""
    if engine is not None:
        if not isinstance(engine, Engine):
            raise TypeError(f"the engine control must be a pitsolve Engine, got {engine!r}")
        return engine
    return make_engine(algorithm.engine, workers=algorithm.workers, comm=algorithm.comm)


register(RecurrenceProblem, Schwarz)(SchwarzSolve)
