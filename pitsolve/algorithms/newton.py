r"""What every trajectory-Newton solver shares (DEER and its variants, Newton–Krylov).

A trajectory-Newton solve keeps the iterate :math:`h_1..h_T` (stored after :math:`h_0`, so
that :math:`h_{t-1}` over any segment is a view), tests its residual
:math:`r_t = h_t - f(h_{t-1}, x_t)` once per iteration, records the best iterate per batch
element, freezes the converged prefix (causality: after k iterations h_1..h_k are exact) and
stops on success, divergence, non-finite values, stalling, ``maxiter`` or the callback. The
backend chosen when the solve starts does the per-iteration passes (residual norms, the step
update), so none of this code looks at array types.

With a problem whose time axis is split over MPI ranks (``comm=``), the iterate is this rank's
slice and the slot before it holds the *halo* :math:`h_{s_r-1}`, the last state of the rank
before (rank 0: :math:`h_0`). The ranks talk through a
:class:`~pitsolve.parallel.slices.TimeSlices` (a no-op in one process), once per test (the
norms' maxima and the converged prefix) and once per step (the step's figures and the new
halo): every rank takes the same decisions, so every rank returns the same return code and the
iterates equal the single-process ones.

**Windows.** A solver may cut the time axis into consecutive *windows* of L steps and solve
them one after another, each from the converged end state of the one before: exact by
causality, since :math:`h_a, \dots, h_{b-1}` depend only on :math:`h_{a-1}` and the inputs of
the window ``[a, b)``; every step still meets the whole-trajectory tolerance. Everything a
Newton step allocates is then window-sized, so its memory is bounded by L whatever T is. The
algorithms that do this (:class:`~pitsolve.DEER`, :class:`~pitsolve.NewtonKrylov`) share
their options through :class:`Windowed`: ``window`` (L) or ``max_bytes``, from which L
follows by the algorithm's :meth:`Windowed.work_bytes_per_step`.

**The trajectory in the caller's array.** With the control ``out=`` the iterate lives in
``out`` itself (e.g. a ``numpy.memmap``) and ``sol.states is out``; the state before the
first step (:math:`h_0`, or the halo) is then kept apart, and :meth:`NewtonState.previous` is a
view of ``out`` for every segment that does not begin at step 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..parallel.slices import TimeSlices
from ..problems import RecurrenceProblem
from ..solution import ReturnCode
from ..solve import Controls, SolverState
from ._memory import call_with_peak, held_bytes, kind_of_call

__all__ = ["NewtonState", "Windowed", "initial_guess"]


def initial_guess(problem: RecurrenceProblem, h_init: Any, out: Any = None) -> Any:
    """The trajectory h0, h_1, …, h_T ``(batch..., T + 1, D)``: h0 followed by ``h_init``
    (checked against the problem), or by h0 repeated over time. With ``out`` (an array
    ``(batch..., T, D)``) h_1, …, h_T are written there instead and ``out`` is returned."""
    xp = problem.xp
    shape = (*problem.batch_shape, problem.T, problem.D)
    if h_init is not None:
        if tuple(h_init.shape) != shape:
            raise ValueError(
                f"h_init must have shape {shape} = (batch..., T, D), got {h_init.shape}"
            )
        if not bool(xp.isfinite(h_init).all()):
            raise ValueError("h_init contains non-finite values (NaN or Inf)")
    if out is None:
        ext = xp.empty((*shape[:-2], shape[-2] + 1, shape[-1]), dtype=problem.dtype)
        ext[..., 0, :] = problem.h0
        h = ext[..., 1:, :]
    else:
        ext = h = out
    if h_init is None:
        h[...] = problem.h0[..., None, :]
    elif h_init is not h:
        h[...] = h_init
    return ext


class Windowed:
    r"""The options of an algorithm that solves the time axis in consecutive windows (see the
    module docstring). The algorithm declares the dataclass fields ``window`` and
    ``max_bytes`` and says what one step of a window costs
    (:meth:`work_bytes_per_step`).

    ``window``: steps per window (None: from ``max_bytes``). ``max_bytes``: memory for the
    work arrays of a window, the trajectory itself not counted; with ``window=None`` the time
    axis is cut into the fewest windows of (nearly) equal length L with
    :math:`L \cdot` ``work_bytes_per_step`` :math:`\le` ``max_bytes`` (L ≥ 1); None: one
    window of T steps.
    """

    window: int | None
    max_bytes: int | float | None

    def check_windows(self) -> None:
        """Raise ``ValueError`` naming ``window`` or ``max_bytes`` if either is invalid."""
        w = self.window
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise ValueError(f"window must be None or an integer ≥ 1, got {w!r}")
        m = self.max_bytes
        if m is not None and (isinstance(m, bool) or not isinstance(m, (int, float)) or m <= 0):
            raise ValueError(f"max_bytes must be None or a number of bytes > 0, got {m!r}")

    def work_bytes_per_step(self, problem: RecurrenceProblem) -> int:  # pragma: no cover
        """Bytes of work arrays per time step of a window (batch included)."""
        raise NotImplementedError

    def window_length(self, problem: RecurrenceProblem) -> int:
        """The number of steps per window for ``problem`` (see ``window``, ``max_bytes``)."""
        T = problem.T
        if self.window is not None:
            return min(self.window, T)
        if self.max_bytes is None:
            return T
        longest = int(min(T, max(1, self.max_bytes // self.work_bytes_per_step(problem))))
        windows = -(-T // longest)
        return -(-T // windows)  # as many windows as needed, of (nearly) equal length


class NewtonState(SolverState):
    """What every trajectory-Newton solver shares: the iterate, its residual, the best
    iterate, the converged prefix and the stopping tests.

    Newton works on the *active segment* ``[start, stop)`` of the time axis: steps before
    ``start`` are converged and frozen, and so are never touched again. By default
    ``stop = T``. A solver may instead solve the time axis in consecutive *windows*
    ``[origin, stop)`` (:meth:`advance_window`): exact by causality, since the steps of a window
    depend only on the steps before it, which are converged. The best iterate is kept for the
    current window only, and ``maxiter`` counts the iterations of one window. Without
    ``h_init``, a window's initial guess is the converged state before it, repeated.

    Without ``out`` the iterate h_1..h_T is stored after h0 (``_with_h0``), so that h_{t-1}
    over any segment is a view; with ``out`` it is ``out`` itself and the state before step
    0 (``_before``: h0, or the halo) is kept apart.
    """

    def __init__(self, problem: RecurrenceProblem, algorithm: Any, controls: Controls):
        super().__init__(problem, algorithm, controls)
        self.model = self.backend.bind(problem.working_model())
        self.rtol, self.atol = controls.tolerances(problem.dtype)
        self.slices = TimeSlices(getattr(problem, "comm", None))
        if self.out is None:
            self._with_h0 = initial_guess(problem, controls.h_init)
            self.h = self._with_h0[..., 1:, :]
            self._before = self._with_h0[..., 0, :]
        else:  # the iterate is the caller's array (a plain view of it: a memmap's too)
            self._with_h0 = None
            self.h = initial_guess(problem, controls.h_init, self.xp.asarray(self.out))
            self._before = problem.h0.copy()
        if self.slices.split:  # the state before the slice: the rank before's last state
            self._before[...] = self.slices.halo(self.h[..., -1, :], problem.h0)
        self.rhs: Any = None  # f(h) - h on the active segment, from test()
        self._keys: dict[str, tuple] = {}  # kinds of call, for the peak memory
        self.start = 0  # steps before `start` are converged and frozen
        self.window = self.window_length()
        if isinstance(algorithm, Windowed):
            if self.slices.split and algorithm.window is None:
                self.window = problem.T  # (max_bytes: each rank's slice is one window)
            windows = -(-problem.T // self.window)
            if self.slices.split and self.slices.any(windows > 1):  # (the same on every rank)
                raise ValueError("window: windows do not run on a time axis split over ranks "
                                 "(comm=) yet; each rank's slice is one window")
            self.stats.extra.update(window=self.window, windows=windows)
        self.stop = self.window  # the active segment is [start, stop)
        self.origin = 0  # the current window is [origin, stop)
        self.window_began = 0  # stats.iterations when the current window began
        self.reset_best()

    def window_length(self) -> int:
        """Steps per window: the algorithm's :meth:`Windowed.window_length`, else T."""
        if isinstance(self.algorithm, Windowed):
            return self.algorithm.window_length(self.problem)
        return self.problem.T

    @property
    def windowed(self) -> bool:
        """True if the time axis is solved in more than one window."""
        return self.window < self.problem.T

    # -- memory (stats.peak_bytes) ------------------------------------------------------------
    def held(self) -> tuple[Any, ...]:
        """The arrays the solve holds between iterations: the iterate (after h0; not the
        caller's ``out``), the best iterate and the right-hand side of the last test (solvers
        add theirs)."""
        return self._with_h0, self._before, self.best, self.rhs

    def measured(self, kind: str, rows: int, fn: Any, *alive: Any) -> Any:
        """``fn()``, noting in ``stats.peak_bytes`` what the solve holds (:meth:`held` and the
        caller's arrays ``alive``) plus what ``fn`` allocates at its peak over ``rows`` rows
        (``pitsolve.algorithms._memory``)."""
        key = self._keys.get(kind)
        if key is None:
            key = self._keys[kind] = kind_of_call(kind, self.problem, self.backend, self.model)
        result, transient = call_with_peak(key, rows, fn)
        total = held_bytes(*self.held(), *alive) + transient
        self.stats.peak_bytes = max(self.stats.peak_bytes, total)
        return result

    def rows(self, steps: int) -> int:
        """Rows of work of ``steps`` steps: steps times the batch size."""
        return steps * int(np.prod(self.problem.batch_shape, dtype=np.int64))

    def reset_best(self) -> None:
        """Forget the best iterate: start recording it afresh on the current window (None
        until the first test: the window is then still the iterate it starts from)."""
        self.best: Any = None
        self.best_err = np.full(self.problem.batch_shape, np.inf)
        self.best_q = np.full(self.problem.batch_shape, np.inf)
        self.stalled_for = 0

    def advance_window(self) -> None:
        """Freeze the current window (converged) and make the next ``window`` steps the
        active segment; without ``h_init`` its guess is the state before it, repeated."""
        self.start = self.origin = self.stop
        self.stop = min(self.stop + self.window, self.problem.T)
        self.window_began = self.stats.iterations
        self.reset_best()
        if self.controls.h_init is None:
            self.segment(self.h)[...] = self.carry(self.start)[..., None, :]

    def evaluate_and_test(self, evaluate: Any) -> tuple[int | None, Any]:
        """``(first, evaluate())``: evaluate the active segment (a tuple whose first entry is
        :math:`f(h_{t-1})` there, or None if the evaluation stopped the solve) and
        :meth:`test` it; while a whole window has converged, on to the next
        (:meth:`advance_window`). ``first`` is None once the solve is done."""
        while True:
            evaluated = evaluate()
            if evaluated is None:
                return None, None
            first = self.test(evaluated[0])
            # (test returns the whole segment only for a converged window before the last;
            # on a split time axis an empty segment, a rank's converged slice, stays)
            if first is None or first < self.stop - self.start or self.stop == self.problem.T:
                return first, evaluated
            del evaluated  # (the window's arrays go before the next window's come)
            self.advance_window()

    def segment(self, h: Any) -> Any:
        """The active segment ``[start, stop)`` of the trajectory ``h`` (a view)."""
        return h[..., self.start : self.stop, :]

    # -- pieces of the trajectory ------------------------------------------------------------
    def carry(self, start: int) -> Any:
        """The state before step ``start`` of the iterate (h0, or the halo, for start = 0)."""
        return self._before if start == 0 else self.h[..., start - 1, :]

    @property
    def trajectory(self) -> Any:
        """The iterate as the solution returns it: ``out`` itself where given, else h."""
        return self.h if self.out is None else self.out

    def previous(self, h: Any, start: int) -> Any:
        """h_{t-1} for t in [start, stop): of the iterate itself (``h is self.h``) a view,
        which changes with it (with ``out`` and start = 0 a copy); of a trial segment ``h``
        covering [start, stop), a copy after the iterate's state before ``start`` (on a split
        time axis, the trial's halo is exchanged: collective)."""
        if h is self.h:
            if self._with_h0 is not None:
                return self._with_h0[..., start : self.stop, :]
            if start > 0:
                return self.h[..., start - 1 : self.stop - 1, :]
            before, inner = self._before, self.h[..., : self.stop - 1, :]
        else:
            before, inner = self.carry(start), h[..., :-1, :]
            if self.slices.split:  # (a rank with nothing active sends nothing: unchanged)
                halo = self.slices.halo(h[..., -1, :] if h.shape[-2] else None, None)
                before = halo if start == 0 and halo is not None else before
        return self.xp.concatenate([before[..., None, :], inner], axis=-2)

    def inputs(self, start: int) -> Any:
        """x_t for t in [start, stop), or None."""
        x = self.problem.inputs
        return None if x is None else x[..., start : self.stop, :]

    def finish(self, code: ReturnCode, converged: Any) -> None:
        self.retcode, self.states, self.converged, self.done = (code, self.trajectory,
                                                               converged, True)

    def terminate(self) -> None:
        """The callback stopped the solve: ``Terminated`` with the best iterate."""
        self.finish_with_best(ReturnCode.Terminated)

    def finish_with_best(self, code: ReturnCode) -> None:
        """Stop with the best iterate of every batch element on the current window (after
        the converged windows before it); elements whose best iterate met the tolerance are
        reported converged if this is the last window."""
        if self.best is not None:
            self.h[..., self.origin : self.stop, :] = self.best
        last = self.stop == self.problem.T
        self.finish(code, (self.best_q <= 1) & last)

    def test(self, f_prev: Any) -> int | None:
        """Record the residual of the current iterate and stop if converged or failed; keep
        :math:`f(h) - h` on the active segment as ``rhs`` (see :meth:`take_rhs`).

        Returns the number of leading steps of the active segment that have converged in
        every batch element (None once done). The whole segment, ``stop - start``, is
        returned only when it converged and is not the last window: the caller moves on with
        :meth:`advance_window`.
        """
        xp = self.xp
        segment = self.segment(self.h)
        self.rhs = xp.empty_like(segment)  # f(h) - h, the Newton step's right-hand side
        if segment.shape[-2] == 0:  # (a rank whose slice has converged: its part is nothing)
            err = q = np.zeros(self.problem.batch_shape)
            first = 0
        else:
            err, q, first = self.measured(
                "test", self.rows(segment.shape[-2]),
                lambda: self.backend.residual_norms(segment, f_prev, self.atol, self.rtol,
                                                    out=self.rhs), f_prev)
        err, q, first = self.slices.test(err, q, first, segment.shape[-2])
        if not np.isfinite(err).all():  # the iterate is finite: f(h) is not (NaN propagates)
            self.finish_with_best(ReturnCode.NonFinite)
            return None
        self.stats.residual_history.append(float(err.max()) if err.size else 0.0)
        improved = err < self.best_err
        if improved.any():
            window = self.h[..., self.origin : self.stop, :]
            if self.best is None:
                self.best = window.copy()  # (the first test of a window: every element)
            elif improved.all():
                self.best[...] = window
            else:
                self.best = xp.where(xp.asarray(improved)[..., None, None], window, self.best)
            self.best_err = np.where(improved, err, self.best_err)
            self.best_q = np.where(improved, q, self.best_q)
        if (q <= 1).all():
            if self.stop < self.problem.T:
                return self.stop - self.start
            self.finish(ReturnCode.Success, np.ones(q.shape, dtype=bool))
            return None
        if (err > self.algorithm.divergence_factor * self.best_err).any():
            self.finish_with_best(ReturnCode.Diverged)
            return None
        if self.stats.iterations - self.window_began >= self.controls.maxiter:
            self.finish_with_best(ReturnCode.MaxIters)
            return None
        return first

    def take_rhs(self, first: int) -> Any:
        """:math:`f(h_{t-1}) - h_t` from the last :meth:`test`, without its first ``first``
        steps (those frozen since); the state lets go of it."""
        rhs, self.rhs = self.rhs, None
        return rhs[..., first:, :]

    def freeze(self, first: int) -> int:
        """Advance ``start`` past the prefix converged in every batch element; returns the
        number of steps frozen."""
        if not self.controls.freeze_converged:
            return 0
        self.start += first
        return first

    def accept(self, segment: Any) -> None:
        """Install a new iterate on the active segment; non-finite values stop the solve."""
        if segment.shape[-2] == 0:
            self.record_step(True, 0.0, 0.0)
            return
        finite, step, size = self.backend.step_size(segment, self.segment(self.h))
        if finite:
            self.segment(self.h)[...] = segment
        self.record_step(finite, step, size)

    def accept_step(self, delta: Any) -> None:
        """Add the step ``delta`` to the active segment; non-finite values stop the solve."""
        if delta.shape[-2] == 0:
            self.record_step(True, 0.0, 0.0)
            return
        self.record_step(*self.backend.apply_step(self.segment(self.h), delta))

    def record_step(self, finite: bool, step: float, size: float) -> None:
        """Count an iteration that moved the iterate by ``step`` (max norm) to an iterate of
        max norm ``size``; stop if it was not finite (restoring the best iterate) or if the
        steps have stalled. On a split time axis: the figures over all ranks, and the halo."""
        if self.slices.split:
            finite, step, size, halo = self.slices.step(finite, step, size, self.h[..., -1, :],
                                                        self.problem.h0)
            if finite:
                self._before[...] = halo
        if not finite:
            self.finish_with_best(ReturnCode.NonFinite)
            return
        size = self.atol + self.rtol * size
        self.stats.iterations += 1
        self.stalled_for = self.stalled_for + 1 if step <= size * 1e-3 else 0
        if self.stalled_for >= 3:
            self.finish_with_best(ReturnCode.Stalled)
