"""``solve``: the one entry point. Dispatches on (problem type, algorithm type) through a registry.

    sol = solve(problem, algorithm, rtol=..., atol=..., maxiter=..., ...)

is ``finalize(run(init(problem, algorithm, ...)))``; ``init`` / ``step`` / ``finalize`` give host
codes manual stepping and warm starts.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from ._arrays import is_cupy_array
from ._validation import as_float_array, check_positive_int
from .backends import BACKENDS, Backend, select
from .parallel.slices import TimeSlices, abort_on_error, collective_check
from .solution import ReturnCode, Solution, SolverError, Stats, is_successful

__all__ = [
    "Algorithm",
    "Controls",
    "SolverState",
    "finalize",
    "init",
    "register",
    "solve",
    "step",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Algorithm:
    """Base of every algorithm: a frozen, keyword-only dataclass of method options (no arrays)."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray) or hasattr(value, "__array_namespace__"):
                raise TypeError(f"{type(self).__name__}.{f.name} must not be an array")


_FALLBACKS = ("sequential",)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Controls:
    """Controls shared by all algorithms, given as keywords to :func:`solve`.

    Attributes
    ----------
    rtol, atol
        residual tolerances, ``max_t |r_t|_inf <= atol + rtol * |h_t|_inf`` per batch element.
        Default by precision: float64 (1e-8, 1e-10), float32 (1e-5, 1e-6).
    maxiter
        outer iterations at most (default 100).
    h_init
        initial guess of the trajectory, shape ``(..., T, D)`` (warm start).
    throw
        raise :class:`SolverError` instead of returning a failed solution.
    fallback
        ``"sequential"`` solves sequentially when the algorithm fails (recorded in stats).
    freeze_converged
        skip work on the converged prefix of the trajectory.
    backend
        ``"numba"``, ``"numpy"`` or ``"cupy"``; overrides the algorithm's choice.
    callback
        called as ``callback(state)`` after every step; returning True stops the solve with
        :attr:`~pitsolve.ReturnCode.Terminated` and the best iterate so far.
    engine
        an :class:`~pitsolve.parallel.Engine` instance (e.g. ``MPIEngine(comm)`` for a
        communicator other than ``COMM_WORLD``) for the algorithms that run windows on an
        engine (:class:`~pitsolve.Schwarz`); overrides their ``engine`` name. Live resources
        (thread pools, communicators) belong here, not in the algorithm.
    out
        an array of shape ``(batch..., T, D)`` (this rank's T on a split time axis) and the
        problem's dtype and array type, e.g. a ``numpy.memmap`` from
        ``numpy.lib.format.open_memmap``: the solver writes the states there (DEER and
        Newton–Krylov keep their iterate in it) and ``sol.states is out``. Together with
        windows (``DEER(max_bytes=...)``) a trajectory larger than memory is solved.
        Supported by :class:`~pitsolve.DEER`, :class:`~pitsolve.NewtonKrylov`,
        :class:`~pitsolve.Sequential` and :class:`~pitsolve.ParallelScan`; the others raise
        ``ValueError``.
    """

    rtol: float | None = None
    atol: float | None = None
    maxiter: int = 100
    h_init: Any = None
    throw: bool = False
    fallback: str | None = None
    freeze_converged: bool = True
    backend: str | None = None
    callback: Callable[[Any], Any] | None = None
    engine: Any = None
    out: Any = None

    def __post_init__(self) -> None:
        for name in ("rtol", "atol"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or not v >= 0 or v == np.inf):
                raise ValueError(f"{name} must be a finite number ≥ 0, got {v!r}")
        check_positive_int(self.maxiter, "maxiter")
        if self.fallback not in (None, *_FALLBACKS):
            raise ValueError(f"fallback must be None or one of {_FALLBACKS}, got {self.fallback!r}")
        if self.backend is not None and self.backend not in BACKENDS:
            raise ValueError(f"backend must be None or one of {BACKENDS}, got {self.backend!r}")
        if self.callback is not None and not callable(self.callback):
            raise TypeError("callback must be callable")
        if self.h_init is not None:
            object.__setattr__(self, "h_init", as_float_array(self.h_init, "h_init", min_ndim=2))
        if self.out is not None and not (isinstance(self.out, np.ndarray)
                                         or is_cupy_array(self.out)):
            raise TypeError(f"out must be a NumPy or CuPy array (e.g. a numpy.memmap), got "
                            f"{type(self.out).__name__}")

    def tolerances(self, dtype: Any) -> tuple[float, float]:
        """(rtol, atol) with the precision-dependent defaults filled in."""
        single = np.dtype(dtype) == np.float32
        rtol = self.rtol if self.rtol is not None else (1e-5 if single else 1e-8)
        atol = self.atol if self.atol is not None else (1e-6 if single else 1e-10)
        return rtol, atol


_CONTROL_NAMES = tuple(f.name for f in dataclasses.fields(Controls))


def check_out(out: Any, problem: Any) -> Any:
    """``out`` checked against ``problem``: the array type of its arrays, its dtype
    (``TypeError``), the shape ``(batch..., T, D)`` and writeable (``ValueError``)."""
    if is_cupy_array(out) != (problem.xp is not np):
        want = "CuPy" if problem.xp is not np else "NumPy"
        raise TypeError(f"out must be a {want} array like the problem's arrays, got "
                        f"{type(out).__module__}.{type(out).__name__}")
    if np.dtype(out.dtype) != np.dtype(problem.dtype):
        raise TypeError(f"out must have the problem's dtype {np.dtype(problem.dtype)}, got "
                        f"{out.dtype}")
    shape = (*problem.batch_shape, problem.T, problem.D)
    if tuple(out.shape) != shape:
        raise ValueError(f"out must have shape {shape} = (batch..., T, D), got {out.shape}")
    if not getattr(out.flags, "writeable", True):
        raise ValueError("out must be writeable (a memmap opened with mode 'r+' or 'w+', "
                         "not 'r')")
    return out


def make_controls(kwargs: dict[str, Any]) -> Controls:
    """Controls from keywords; unknown keywords are a ``TypeError`` listing the valid ones."""
    unknown = sorted(set(kwargs) - set(_CONTROL_NAMES))
    if unknown:
        raise TypeError(
            f"unknown solve control(s) {unknown}; valid controls are {list(_CONTROL_NAMES)} "
            f"(method options go in the algorithm's constructor)"
        )
    return Controls(**kwargs)


class SolverState:
    """The state of a solve between steps. Algorithms subclass it.

    The backend is chosen here, once (:func:`pitsolve.backends.select`: the ``backend=``
    control, then the algorithm's ``backend`` option, then the arrays), and kept as
    ``self.backend``; a subclass computes through it. A subclass sets ``self.states``,
    ``self.retcode`` and ``self.adjoint`` (the solution's adjoint rule) and implements
    :meth:`step`, which advances one iteration and sets ``self.done`` when finished.

    ``self.out`` is the ``out=`` control checked against the problem (None without it); a
    subclass that writes its states there sets ``writes_out = True``.
    """

    writes_out: bool = False

    def __init__(self, problem: Any, algorithm: Algorithm, controls: Controls):
        self.problem, self.algorithm, self.controls = problem, algorithm, controls
        self.backend: Backend = select(
            problem.xp, controls.backend, getattr(algorithm, "backend", None)
        )
        self.xp = self.backend.xp
        self.stats = Stats()
        self.done = False
        self.retcode = ReturnCode.Failure
        self.states: Any = None
        self.converged: Any = None
        self.adjoint: Any = None
        self.out: Any = None
        if controls.out is not None:
            if not self.writes_out:
                raise ValueError(
                    f"out: {type(algorithm).__name__} does not write its states into a given "
                    "array; DEER, NewtonKrylov, Sequential and ParallelScan do")
            # (on a split time axis: the same error on every rank if any rank's is wrong)
            self.out = collective_check(getattr(problem, "comm", None),
                                        lambda: check_out(controls.out, problem))

    def step(self) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def terminate(self) -> None:
        """Stop before convergence (the callback asked for it): ``Terminated`` with the best
        iterate so far. Solvers with a best iterate override this to install it."""
        self.retcode, self.done = ReturnCode.Terminated, True

    def solution(self) -> Solution:
        """The solution as it stands."""
        return Solution(
            states=self.states,
            retcode=self.retcode,
            stats=self.stats,
            problem=self.problem,
            algorithm=self.algorithm,
            converged=self.converged,
            backend=self.backend,
            adjoint=self.adjoint,
        )


# (problem type, algorithm type) -> factory(problem, algorithm, controls) -> SolverState
_REGISTRY: dict[tuple[type, type], Callable[[Any, Any, Controls], SolverState]] = {}
_NAMED: dict[str, Callable[[], Algorithm]] = {}


def register(problem_type: type, algorithm_type: type, *, name: str | None = None) -> Callable:
    """Decorator registering a solver-state factory for (problem type, algorithm type).

    ``name`` also makes the algorithm available by name (used by ``fallback=``).
    """

    def decorate(factory: Callable) -> Callable:
        _REGISTRY[(problem_type, algorithm_type)] = factory
        if name is not None:
            _NAMED[name] = algorithm_type
        return factory

    return decorate


def _lookup(problem: Any, algorithm: Any) -> Callable:
    for ptype in type(problem).__mro__:
        for atype in type(algorithm).__mro__:
            factory = _REGISTRY.get((ptype, atype))
            if factory is not None:
                return factory
    supported = sorted(a.__name__ for p, a in _REGISTRY if isinstance(problem, p))
    raise TypeError(
        f"{type(algorithm).__name__} cannot solve a {type(problem).__name__}; "
        f"algorithms for it: {supported}"
    )


def init(problem: Any, algorithm: Algorithm, **controls: Any) -> SolverState:
    """Set up a solve without iterating: returns the state that :func:`step` advances."""
    if not isinstance(algorithm, Algorithm):
        raise TypeError(
            f"algorithm must be a pitsolve algorithm such as ps.DEER(), got "
            f"{type(algorithm).__name__}"
        )
    factory = _lookup(problem, algorithm)
    ctrl = make_controls(controls)
    t0 = time.perf_counter()
    state = factory(problem, algorithm, ctrl)
    state.stats.wall_time += time.perf_counter() - t0
    return state


def step(state: SolverState) -> SolverState:
    """Advance a solve by one iteration (no-op once done)."""
    if not state.done:
        t0 = time.perf_counter()
        slices = TimeSlices(getattr(state.problem, "comm", None))
        # on a time axis split over ranks, an exception on one rank ends the job (no rank
        # waits for it in a collective); overflow and NaN are detected by the solvers and
        # reported as return codes
        with abort_on_error(slices.comm), np.errstate(over="ignore", invalid="ignore",
                                                      divide="ignore", under="ignore"):
            state.step()
            cb = state.controls.callback
            stop = cb is not None and cb(state) is True
        state.stats.wall_time += time.perf_counter() - t0
        if cb is not None and slices.any(stop) and not state.done:  # the ranks agree
            state.terminate()
    return state


def finalize(state: SolverState) -> Solution:
    """The :class:`Solution` of a solve; applies ``fallback`` and ``throw``."""
    sol = state.solution()
    ctrl = state.controls
    # a solve the callback stopped is the caller's choice: no fallback overrides it
    stopped = sol.retcode is ReturnCode.Terminated
    if not is_successful(sol) and not stopped and ctrl.fallback is not None:
        fallback = _NAMED[ctrl.fallback]()
        # on the same backend, into the same array
        fb = solve(sol.problem, fallback, backend=state.backend.name, out=ctrl.out)
        fb.stats.extra["fallback"] = {
            "algorithm": repr(sol.algorithm),
            "retcode": sol.retcode.name,
            "iterations": sol.stats.iterations,
        }
        fb.stats.wall_time += sol.stats.wall_time
        sol = fb
    if ctrl.throw and not is_successful(sol):
        raise SolverError(sol)
    return sol


def solve(problem: Any, algorithm: Algorithm, **controls: Any) -> Solution:
    """Solve ``problem`` with ``algorithm``; see :class:`Controls` for the keyword controls.

    Returns
    -------
    Solution
        ``states`` of shape ``(..., T, D)`` in the input's array type and dtype, a ``retcode``
        (test with :func:`pitsolve.is_successful`) and ``stats``.

    Raises
    ------
    TypeError, ValueError
        Invalid problem, algorithm or controls (naming the argument).
    SolverError
        Only with ``throw=True``, when the solve does not succeed.
    """
    state = init(problem, algorithm, **controls)
    while not state.done:
        step(state)
    return finalize(state)
