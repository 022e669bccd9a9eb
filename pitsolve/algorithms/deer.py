r"""DEER: Newton's method over the whole trajectory, one parallel scan per iteration.

The residual of a trajectory guess is :math:`r_t(h) = h_t - f(h_{t-1}, x_t)`. Linearising f
at the iterate :math:`h^{(k)}` gives the affine recurrence

.. math::

    h^{(k+1)}_t = \hat J_t h^{(k+1)}_{t-1} + \big(f(h^{(k)}_{t-1}) - \hat J_t h^{(k)}_{t-1}\big),

solved by one scan. :math:`\hat J_t` is the Jacobian :math:`J_t = \partial f/\partial h`
(DEER, Newton), its diagonal (quasi-DEER) or zero (Picard). One evaluation of f per iteration
serves both the convergence test and the next right-hand side; the test runs before the scan,
so the converged iteration costs no scan. After k iterations h_1..h_k are exact (causality), and
with ``freeze_converged`` the converged prefix is never touched again.

**Windows.** One iteration over L steps holds the Jacobians :math:`\hat J_t` (:math:`D^2`
numbers per step, D for quasi-DEER) and a handful of D-sized arrays (f, the right-hand side,
the step, the best iterate), and a successful solve keeps the Jacobians for the adjoint; over
the whole trajectory that is several times the trajectory itself (``shplrnn_3x50``, D = 3:
192 bytes a step in ``stats.peak_bytes``, of which the trajectory is 24). With ``window`` or
``max_bytes`` the time axis is solved in consecutive windows of L steps, each from the
converged end state of the one before (exact by causality): the work is O(L (D² + D)) and only
the trajectory is O(T D), which ``out=`` can place in a memory-mapped file. The Jacobians at
the solution are then not kept (they would be O(T D²)): the adjoint
(:class:`~pitsolve.adjoint.ScanAdjoint` with the same ``window``) evaluates them window by
window from the stored states, from the last window to the first.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..adjoint import ScanAdjoint
from ..backends import BACKENDS
from ..problems import RecurrenceProblem
from ..solution import ReturnCode
from ..solve import Algorithm, Controls, register
from .newton import NewtonState, Windowed

__all__ = ["DEER", "LevenbergMarquardt", "LineSearch"]

_JACOBIANS = ("full", "diagonal", "none")
_BACKENDS = ("auto", *BACKENDS)


@dataclasses.dataclass(frozen=True, kw_only=True)
class LineSearch:
    r"""Backtracking on the merit :math:`\phi = \tfrac12\|r\|^2` along the Newton direction.

    The step :math:`h \leftarrow h + s\,\delta` is accepted, per batch element, when
    :math:`\phi(h + s\delta) \le (1 - 2 c s)\,\phi(h)` (Armijo: for the Newton direction the
    directional derivative of φ is −2φ); otherwise s ← ``shrink``·s.
    """

    shrink: float = 0.5
    armijo: float = 1e-4
    max_backtracks: int = 30

    def __post_init__(self) -> None:
        if not 0 < self.shrink < 1:
            raise ValueError(f"shrink must lie in (0, 1), got {self.shrink}")
        if not 0 <= self.armijo < 0.5:
            raise ValueError(f"armijo must lie in [0, 0.5), got {self.armijo}")
        if self.max_backtracks < 1:
            raise ValueError(f"max_backtracks must be ≥ 1, got {self.max_backtracks}")


@dataclasses.dataclass(frozen=True, kw_only=True)
class LevenbergMarquardt:
    r"""ELK-style damping: minimise :math:`\|r + J_F\delta\|^2 + \lambda\|\delta\|^2`.

    The minimiser is the smoothed mean of a linear-Gaussian state-space model (dynamics
    :math:`\delta_t = J_t\delta_{t-1} - r_t` with unit process noise, observations
    :math:`0 = \delta_t` with variance 1/λ), computed by a Kalman filter and RTS smoother.
    λ decreases by ``decrease`` after an accepted step and increases by ``increase`` after a
    rejected one; λ → 0 recovers Newton.
    """

    lam: float = 1.0
    increase: float = 10.0
    decrease: float = 0.3
    lam_min: float = 1e-8
    lam_max: float = 1e8

    def __post_init__(self) -> None:
        if not self.lam > 0:
            raise ValueError(f"lam must be > 0, got {self.lam}")
        if not self.increase > 1 or not 0 < self.decrease < 1:
            raise ValueError("increase must be > 1 and decrease in (0, 1)")


#: window-sized D-vectors an iteration holds at its peak besides Ĵ, by damping. Undamped: f - h
#: (or f itself for Picard), the step δ, the best iterate, with ``out=`` the previous states (a
#: copy at step 0), and a spare for the model's and the scan's small temporaries; the line
#: search adds its trial, direction and merit temporaries; Levenberg–Marquardt's Kalman
#: smoother holds D×D covariances per step (``_WORK_MATRICES``) besides. Measured with
#: ``stats.peak_bytes`` on shplrnn_3x50, elman_256 and gru_64 (tests/test_windows.py)
_WORK_VECTORS = {None: 5, "LineSearch": 11, "LevenbergMarquardt": 9}
_WORK_MATRICES = {None: 0, "LineSearch": 0, "LevenbergMarquardt": 7}


@dataclasses.dataclass(frozen=True, kw_only=True)
class DEER(Algorithm, Windowed):
    """Newton (``jacobian="full"``), quasi-Newton (``"diagonal"``) or Picard (``"none"``)
    iterations over the whole trajectory: one parallel scan per iteration (Picard needs none).

    Parameters
    ----------
    jacobian
        which :math:`\\hat J_t` linearises f: ``"full"`` O(T D³) work per iteration
        (dense scan) with quadratic convergence near the solution, ``"diagonal"`` O(T D),
        ``"none"`` O(T D) (no scan at all: h ← f(h)).
    damping
        ``None``, :class:`LineSearch` or :class:`LevenbergMarquardt`.
    backend
        ``"auto"``, ``"numba"``, ``"numpy"`` or ``"cupy"`` (kernels for the scans).
    chunk_size
        chunk length of the blocked scan (None: automatic).
    divergence_factor
        report ``Diverged`` when the residual exceeds this multiple of the
        best residual seen.
    window
        solve the time axis in consecutive windows of this many steps, each from the
        converged end state of the one before (None: from ``max_bytes``).
    max_bytes
        memory for the work arrays of a window (the Jacobians and the window-sized vectors,
        :meth:`work_bytes_per_step`), the trajectory itself not counted: with
        ``window=None`` the fewest windows of (nearly) equal length that fit. None (the
        default): one window of T steps.

    Notes
    -----
    With more than one window, ``stats["window"]`` and ``stats["windows"]`` give their
    length and number, ``maxiter`` bounds the iterations of each window, ``sol.jacobians``
    is None and ``sol.vjp`` runs the transposed scan window by window
    (:class:`~pitsolve.adjoint.ScanAdjoint` with ``window``). Windows do not run on a time
    axis split over ranks (``comm=``).
    """

    jacobian: str = "full"
    damping: LineSearch | LevenbergMarquardt | None = None
    backend: str = "auto"
    chunk_size: int | None = None
    divergence_factor: float = 1e6
    window: int | None = None
    max_bytes: int | float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.jacobian not in _JACOBIANS:
            raise ValueError(f"jacobian must be one of {_JACOBIANS}, got {self.jacobian!r}")
        if self.damping is not None and not isinstance(
            self.damping, (LineSearch, LevenbergMarquardt)
        ):
            raise TypeError(
                "damping must be None, LineSearch() or LevenbergMarquardt(), got "
                f"{type(self.damping).__name__}"
            )
        if self.backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {self.backend!r}")
        if not self.divergence_factor > 1:
            raise ValueError(f"divergence_factor must be > 1, got {self.divergence_factor}")
        self.check_windows()

    def work_bytes_per_step(self, problem: RecurrenceProblem) -> int:
        r"""Bytes of work arrays per time step of a window (batch included):
        :math:`B\,(n_J + k D)` numbers, with :math:`n_J` the Jacobian's size (:math:`D^2`
        for ``jacobian="full"`` on a dense model, D for a diagonal one or quasi-DEER, 0 for
        Picard) and k the window-sized vectors an iteration holds (5 undamped, 11 with the
        line search, 9 and seven D×D covariances with Levenberg–Marquardt), as measured by
        ``stats.peak_bytes``. A model whose evaluation allocates more than f and Ĵ adds its
        own temporaries (GRU: about two more Jacobians' worth)."""
        B = int(np.prod(problem.batch_shape, dtype=int))
        D, itemsize = problem.D, np.dtype(problem.dtype).itemsize
        diagonal = self.jacobian == "diagonal" or getattr(
            problem.model, "jacobian_structure", "dense") == "diagonal"
        n_J = 0 if self.jacobian == "none" else D if diagonal else D * D
        damping = None if self.damping is None else type(self.damping).__name__
        n = n_J + _WORK_VECTORS[damping] * D + _WORK_MATRICES[damping] * D * D
        return B * n * itemsize


def truncate_at_nonfinite(delta: Any, xp: Any) -> Any:
    """``delta`` with every step from the first non-finite one on set to zero.

    The Newton update of steps before t depends only on steps before t (causality), so the
    truncated direction is the exact Newton direction of the prefix problem: a line search
    along it makes progress where the full direction overflowed.
    """
    finite = xp.isfinite(delta).all(axis=-1)
    ok = xp.cumprod(finite, axis=-1).astype(bool)
    return xp.where(ok[..., None], delta, 0.0)


def assemble_jacobians(kept: list[tuple[int, Any]], T: int, time_axis: int, backend: Any) -> Any:
    """The Jacobians kept as ``(start, J)`` pieces in time order, as one array over all T
    steps; None if they do not cover them or are not all finite (the Newton steps never
    used those of converged steps, so nothing else checked them)."""
    t = 0
    for start, J in kept:
        if start != t:
            return None
        t += J.shape[time_axis]
    if t != T:
        return None
    if len(kept) == 1:
        J = kept[0][1]
    else:
        J = backend.xp.concatenate([J for _, J in kept], axis=time_axis)
    return J if backend.all_finite(J) else None


class DEERSolve(NewtonState):
    """State of a DEER solve; see :class:`DEER`."""

    writes_out = True

    def __init__(self, problem: RecurrenceProblem, algorithm: DEER, controls: Controls):
        super().__init__(problem, algorithm, controls)
        window = self.window if self.windowed else None
        self.adjoint = ScanAdjoint(chunk_size=algorithm.chunk_size, window=window)
        damping = algorithm.damping
        self.lam = damping.lam if isinstance(damping, LevenbergMarquardt) else 0.0
        # Jacobians at converged steps, (start, J) in time order, for the adjoint
        # (sol.jacobians); only where Ĵ is the exact Jacobian, and not with windows (the
        # adjoint then evaluates them window by window: kept, they would be O(T D²))
        exact = algorithm.jacobian == "full" or (
            algorithm.jacobian == "diagonal" and self.model.jacobian_structure == "diagonal"
        )
        self.kept: list[tuple[int, Any]] | None = [] if exact and not self.windowed else None
        self.constant = self.constant_guess()

    def constant_guess(self) -> bool:
        """True if the guess of the current window is constant and f the same at every step
        (no inputs): the default guess repeats the state before the window, so the first
        linearisation is that of one step, broadcast over time."""
        return self.controls.h_init is None and self.problem.inputs is None

    def advance_window(self) -> None:
        super().advance_window()
        self.constant = self.constant_guess()

    def keep(self, J: Any, start: int, n: int | None = None) -> None:
        """Record the Jacobians of steps ``[start, start + n)`` (all of ``J`` if n is None),
        converged: their states, and those before them, never change again."""
        if self.kept is None or J is None:
            return
        if n is not None:
            J = J[(slice(None),) * (self.h.ndim - 2) + (slice(0, n),)].copy()
        elif not getattr(J.flags, "writeable", True):  # broadcast (constant guess)
            J = J.copy()  # an array of its own
        self.kept.append((start, J))

    def solution(self) -> Any:
        sol = super().solution()
        if self.retcode is ReturnCode.Success and self.kept:
            # assembled if used; the closure holds the kept pieces only, not this state
            kept, T, time_axis, backend = self.kept, self.problem.T, self.h.ndim - 2, self.backend
            sol.defer_jacobians(lambda: assemble_jacobians(kept, T, time_axis, backend))
        return sol

    def held(self) -> tuple[Any, ...]:
        """:meth:`NewtonState.held` and the Jacobians kept for the adjoint."""
        return (*super().held(), *(J for _, J in self.kept or ()))

    def linearise(self, h: Any, start: int) -> tuple[Any, Any]:
        """f(h_{t-1}) and Ĵ_t on [start, stop); for the constant initial guess, those of its
        first step broadcast over time (read-only views)."""
        model, x, prev = self.model, self.inputs(start), self.previous(h, start)
        constant = self.constant and h is self.h
        if constant:
            self.constant = False  # the first step makes the iterate vary over time
            prev = prev[..., :1, :]
        kind = self.algorithm.jacobian
        self.stats.function_evals += 1
        if kind == "none":
            evaluate = model.f
        else:
            self.stats.jacobian_evals += 1
            if kind == "diagonal" or model.jacobian_structure == "diagonal":
                evaluate = model.f_and_diagonal_jacobian
            else:
                evaluate = model.f_and_jacobian
        out = self.measured(f"eval:{kind}", self.rows(prev.shape[-2]), lambda: evaluate(prev, x))
        F, J = (out, None) if kind == "none" else out
        if not constant:
            return F, J
        xp, n = self.xp, self.stop - start
        F = xp.broadcast_to(F, (*F.shape[:-2], n, F.shape[-1]))
        if J is not None:
            axis = F.ndim - 2
            J = xp.broadcast_to(J, (*J.shape[:axis], n, *J.shape[axis + 1 :]))
        return F, J

    def merit(self, h: Any, *alive: Any) -> Any:
        """½‖r‖² per batch element on the active segment of the iterate (``h is self.h``) or
        of a trial segment ``h``, +inf where non-finite (``alive``: the caller's arrays, for
        ``stats.peak_bytes``)."""
        xp = self.xp
        self.stats.function_evals += 1
        prev, x = self.previous(h, self.start), self.inputs(self.start)
        f_prev = self.measured("eval:none", self.rows(prev.shape[-2]),
                               lambda: self.model.f(prev, x), h, *alive)
        r = (self.segment(h) if h is self.h else h) - f_prev
        phi = self.slices.sum(0.5 * (r * r).sum(axis=(-2, -1)))
        return xp.where(xp.isfinite(phi), phi, xp.inf)

    def evaluate(self) -> tuple[Any, Any] | None:
        """f(h_{t-1}) and Ĵ_t on the active segment (:meth:`linearise`), or None if Ĵ is not
        finite and a damped step would use it (the solve then stops)."""
        f_prev, J = self.linearise(self.h, self.start)
        # a non-finite Ĵ makes the Newton step non-finite, which the update reports; the
        # damped steps would instead shrink or reject the step, so check first for them
        if J is not None and self.algorithm.damping is not None and not self.slices.all(
                self.backend.all_finite(J)):
            self.finish_with_best(ReturnCode.NonFinite)
            return None
        return f_prev, J

    def step(self) -> None:
        xp = self.xp
        converged, evaluated = self.evaluate_and_test(self.evaluate)
        start = self.start
        if converged is None:
            if self.retcode is ReturnCode.Success:
                self.keep(evaluated[1], start)
            return
        f_prev, J = evaluated
        del evaluated
        first = self.freeze(converged)
        if first:
            self.keep(J, start, first)
            time_axis = f_prev.ndim - 2
            f_prev = f_prev[..., first:, :]
            if J is not None:
                J = J[(slice(None),) * time_axis + (slice(first, None),)]
        damping = self.algorithm.damping
        if isinstance(damping, LevenbergMarquardt):
            self.accept(self.levenberg_marquardt(f_prev, J))
            return
        if J is None:  # Picard: h ← f(h)
            new = f_prev
        else:
            # the Newton step δ = h^(k+1) - h^(k) solves δ_t = Ĵ_t δ_{t-1} + (f_t - h_t),
            # δ = 0 before the segment: one scan, no products Ĵ_t h_{t-1}
            zero, chunk = xp.zeros_like(self.carry(self.start)), self.algorithm.chunk_size
            rhs = self.take_rhs(first)
            if damping is None:
                f_prev = None  # (the undamped step needs rhs = f - h only)
            delta = self.measured("scan", self.rows(rhs.shape[-2]),
                                  lambda: self.slices.scan(self.backend, J, rhs, zero,
                                                           chunk_size=chunk),
                                  f_prev, J, rhs)
            self.stats.scans += 1
            if damping is None:
                self.accept_step(delta)  # h += δ in place, measured in the same pass
                return
            new = self.segment(self.h) + delta
        if isinstance(damping, LineSearch):
            new = self.measured("line search", self.rows(new.shape[-2]),
                                lambda: self.line_search(new), f_prev, J, new)
        self.accept(new)

    def levenberg_marquardt(self, f_prev: Any, J: Any) -> Any:
        """An accepted LM step (λ adapted by accept/reject on ½‖r‖²), or None if none."""
        xp, lm = self.xp, self.algorithm.damping
        old = self.segment(self.h)
        r = old - f_prev
        shape = r.shape
        B = int(np.prod(shape[:-2], dtype=int))
        F = xp.zeros_like(r) if J is None else J
        F = F.reshape(B, *F.shape[len(shape) - 2 :])
        chunk = self.algorithm.chunk_size
        phi0 = self.slices.sum(0.5 * (r * r).sum(axis=(-2, -1)))  # (over all ranks)
        lams = self.stats.extra.setdefault("lm_lambda", [])
        c = -r.reshape(B, *shape[-2:])
        for _ in range(60):
            delta = self.measured(
                "lm", self.rows(shape[-2]),
                lambda: self.backend.lm_smoother(
                    F, c, self.lam, chunk_size=chunk,
                    slices=self.slices if self.slices.split else None),
                f_prev, F, r, c).reshape(shape)
            self.stats.scans += 2
            trial = old + delta  # the trial segment
            phi = self.merit(trial, f_prev, F, r, delta)
            if bool((phi < phi0).all()):
                lams.append(self.lam)
                self.lam = max(self.lam * lm.decrease, lm.lam_min)
                return trial
            if self.lam >= lm.lam_max:
                break
            self.lam = min(self.lam * lm.increase, lm.lam_max)
        lams.append(self.lam)
        return old  # no decrease even at the largest damping: reported as Stalled

    def line_search(self, new: Any) -> Any:
        xp, ls = self.xp, self.algorithm.damping
        old = self.segment(self.h)
        delta = truncate_at_nonfinite(new - old, xp)
        phi0 = self.merit(self.h, new, delta)
        s = xp.ones(self.problem.batch_shape, dtype=self.problem.dtype)
        accepted = xp.zeros(self.problem.batch_shape, dtype=bool)
        trial = xp.empty_like(old)  # the trial segment
        for _ in range(ls.max_backtracks):
            trial[...] = old + s[..., None, None] * delta
            phi = self.merit(trial, new, delta)
            ok = phi <= (1 - 2 * ls.armijo * s) * phi0
            accepted = accepted | ok
            if bool(accepted.all()):
                break
            s = xp.where(accepted, s, s * ls.shrink)
        s = xp.where(accepted, s, 0.0 * s)  # no acceptable step: stay (reported as Stalled)
        self.stats.extra["last_step_size"] = float(self.backend.to_host(s.min()))
        return old + s[..., None, None] * delta


register(RecurrenceProblem, DEER)(DEERSolve)
