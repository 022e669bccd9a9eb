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
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..kernels import affine_scan, affine_scan_transpose
from ..kernels.kalman import lm_smoother
from ..kernels.residual import residual_norms
from ..kernels.update import all_finite, apply_step, step_size
from ..problems import RecurrenceProblem
from ..solution import ReturnCode
from ..solve import Algorithm, Controls, SolverState, register
from .base import select_backend

__all__ = ["DEER", "LevenbergMarquardt", "LineSearch"]

_JACOBIANS = ("full", "diagonal", "none")
_BACKENDS = ("auto", "numba", "numpy", "cupy")


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


@dataclasses.dataclass(frozen=True, kw_only=True)
class DEER(Algorithm):
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
    """

    jacobian: str = "full"
    damping: LineSearch | LevenbergMarquardt | None = None
    backend: str = "auto"
    chunk_size: int | None = None
    divergence_factor: float = 1e6

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


def truncate_at_nonfinite(delta: Any, xp: Any) -> Any:
    """``delta`` with every step from the first non-finite one on set to zero.

    The Newton update of steps before t depends only on steps before t (causality), so the
    truncated direction is the exact Newton direction of the prefix problem: a line search
    along it makes progress where the full direction overflowed.
    """
    finite = xp.isfinite(delta).all(axis=-1)
    ok = xp.cumprod(finite, axis=-1).astype(bool)
    return xp.where(ok[..., None], delta, 0.0)


def initial_guess(problem: RecurrenceProblem, h_init: Any) -> Any:
    """The trajectory h0, h_1, …, h_T ``(batch..., T + 1, D)``: h0 followed by ``h_init``
    (checked against the problem), or by h0 repeated over time."""
    xp = problem.xp
    shape = (*problem.batch_shape, problem.T, problem.D)
    if h_init is not None:
        if tuple(h_init.shape) != shape:
            raise ValueError(
                f"h_init must have shape {shape} = (batch..., T, D), got {h_init.shape}"
            )
        if not bool(xp.isfinite(h_init).all()):
            raise ValueError("h_init contains non-finite values (NaN or Inf)")
    ext = xp.empty((*shape[:-2], shape[-2] + 1, shape[-1]), dtype=problem.dtype)
    ext[..., 0, :] = problem.h0
    ext[..., 1:, :] = problem.h0[..., None, :] if h_init is None else h_init
    return ext


class NewtonState(SolverState):
    """What every trajectory-Newton solver shares: the iterate, its residual, the best
    iterate, the converged prefix and the stopping tests.

    Newton works on the *active segment* ``[start, stop)`` of the time axis: steps before
    ``start`` are converged and frozen, and so are never touched again. By default
    ``stop = T``. A solver may instead solve the time axis in consecutive *windows*
    ``[origin, stop)`` (:meth:`advance_window`): exact by causality, since the steps of a window
    depend only on the steps before it, which are converged. The best iterate is kept for the
    current window only, and ``maxiter`` counts the iterations of one window.
    """

    def __init__(self, problem: RecurrenceProblem, algorithm: Any, controls: Controls):
        super().__init__(problem, algorithm, controls)
        self.xp = problem.xp
        self.model = problem.working_model()
        self.rtol, self.atol = controls.tolerances(problem.dtype)
        # the iterate h_1..h_T is a view after h0: h_{t-1} over any segment is then a view too
        self._with_h0 = initial_guess(problem, controls.h_init)
        self.h = self._with_h0[..., 1:, :]
        self.rhs: Any = None  # f(h) - h on the active segment, from test()
        self.start = 0  # steps before `start` are converged and frozen
        self.window = self.window_length()
        self.stop = self.window  # the active segment is [start, stop)
        self.origin = 0  # the current window is [origin, stop)
        self.window_began = 0  # stats.iterations when the current window began
        self.reset_best()

    def window_length(self) -> int:
        """Steps per window: T (one window) unless a solver overrides it."""
        return self.problem.T

    def reset_best(self) -> None:
        """Forget the best iterate: start recording it afresh on the current window (None
        until the first test: the window is then still the iterate it starts from)."""
        self.best: Any = None
        self.best_err = np.full(self.problem.batch_shape, np.inf)
        self.best_q = np.full(self.problem.batch_shape, np.inf)
        self.stalled_for = 0

    def advance_window(self) -> None:
        """Freeze the current window (converged) and make the next ``window`` steps the
        active segment."""
        self.start = self.origin = self.stop
        self.stop = min(self.stop + self.window, self.problem.T)
        self.window_began = self.stats.iterations
        self.reset_best()

    def segment(self, h: Any) -> Any:
        """The active segment ``[start, stop)`` of the trajectory ``h`` (a view)."""
        return h[..., self.start : self.stop, :]

    # -- pieces of the trajectory ------------------------------------------------------------
    def carry(self, start: int) -> Any:
        """The state before step ``start`` (h0 for start = 0)."""
        return self.problem.h0 if start == 0 else self.h[..., start - 1, :]

    def previous(self, h: Any, start: int) -> Any:
        """h_{t-1} for t in [start, stop), from the trajectory ``h`` (full length): for the
        iterate itself (``h is self.h``) a view, which changes with it."""
        if h is self.h:
            return self._with_h0[..., start : self.stop, :]
        inner = h[..., start : self.stop - 1, :]
        return self.xp.concatenate([self.carry(start)[..., None, :], inner], axis=-2)

    def inputs(self, start: int) -> Any:
        """x_t for t in [start, stop), or None."""
        x = self.problem.inputs
        return None if x is None else x[..., start : self.stop, :]

    def finish(self, code: ReturnCode, states: Any, converged: Any) -> None:
        self.retcode, self.states, self.converged, self.done = code, states, converged, True

    def finish_with_best(self, code: ReturnCode) -> None:
        """Stop with the best iterate of every batch element on the current window (after
        the converged windows before it); elements whose best iterate met the tolerance are
        reported converged if this is the last window."""
        if self.best is not None:
            self.h[..., self.origin : self.stop, :] = self.best
        last = self.stop == self.problem.T
        self.finish(code, self.h, (self.best_q <= 1) & last)

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
        err, q, first = residual_norms(segment, f_prev, self.atol, self.rtol, out=self.rhs)
        err = np.asarray(_to_host(err), dtype=float)
        q = np.asarray(_to_host(q), dtype=float)
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
            self.finish(ReturnCode.Success, self.h, np.ones(q.shape, dtype=bool))
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
        finite, step, size = step_size(segment, self.segment(self.h))
        if finite:
            self.segment(self.h)[...] = segment
        self.record_step(finite, step, size)

    def accept_step(self, delta: Any) -> None:
        """Add the step ``delta`` to the active segment; non-finite values stop the solve."""
        self.record_step(*apply_step(self.segment(self.h), delta))

    def record_step(self, finite: bool, step: float, size: float) -> None:
        """Count an iteration that moved the iterate by ``step`` (max norm) to an iterate of
        max norm ``size``; stop if it was not finite (restoring the best iterate) or if the
        steps have stalled."""
        if not finite:
            self.finish_with_best(ReturnCode.NonFinite)
            return
        size = self.atol + self.rtol * size
        self.stats.iterations += 1
        self.stalled_for = self.stalled_for + 1 if step <= size * 1e-3 else 0
        if self.stalled_for >= 3:
            self.finish_with_best(ReturnCode.Stalled)


def _to_host(x: Any) -> Any:
    return x.get() if hasattr(x, "get") else x


def assemble_jacobians(kept: list[tuple[int, Any]], T: int, time_axis: int, xp: Any) -> Any:
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
    J = kept[0][1] if len(kept) == 1 else xp.concatenate([J for _, J in kept], axis=time_axis)
    return J if all_finite(J) else None


class DEERSolve(NewtonState):
    """State of a DEER solve; see :class:`DEER`."""

    def __init__(self, problem: RecurrenceProblem, algorithm: DEER, controls: Controls):
        super().__init__(problem, algorithm, controls)
        backend = select_backend(problem, algorithm.backend, controls.backend)
        self.kernel = "numba" if backend == "numba" else "numpy"
        self.stats.extra["kernel"] = self.kernel
        self.stats.extra["adjoint"] = "scan"
        damping = algorithm.damping
        self.lam = damping.lam if isinstance(damping, LevenbergMarquardt) else 0.0
        # Jacobians at converged steps, (start, J) in time order, for the adjoint
        # (sol.jacobians); only where Ĵ is the exact Jacobian
        exact = algorithm.jacobian == "full" or (
            algorithm.jacobian == "diagonal" and self.model.jacobian_structure == "diagonal"
        )
        self.kept: list[tuple[int, Any]] | None = [] if exact else None
        # the default guess repeats h0 and, without inputs, f is the same at every step:
        # the first linearisation is that of one step, broadcast over time
        self.constant = controls.h_init is None and problem.inputs is None

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
            kept, T, time_axis, xp = self.kept, self.problem.T, self.h.ndim - 2, self.xp
            sol.defer_jacobians(lambda: assemble_jacobians(kept, T, time_axis, xp))
        return sol

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
            F, J = model.f(prev, x), None
        else:
            self.stats.jacobian_evals += 1
            if kind == "diagonal" or model.jacobian_structure == "diagonal":
                F, J = model.f_and_diagonal_jacobian(prev, x)
            else:
                F, J = model.f_and_jacobian(prev, x)
        if not constant:
            return F, J
        xp, n = self.xp, self.stop - start
        F = xp.broadcast_to(F, (*F.shape[:-2], n, F.shape[-1]))
        if J is not None:
            axis = F.ndim - 2
            J = xp.broadcast_to(J, (*J.shape[:axis], n, *J.shape[axis + 1 :]))
        return F, J

    def merit(self, h: Any) -> Any:
        """½‖r‖² per batch element on the active segment, +inf where non-finite."""
        xp = self.xp
        self.stats.function_evals += 1
        f_prev = self.model.f(self.previous(h, self.start), self.inputs(self.start))
        r = self.segment(h) - f_prev
        phi = 0.5 * (r * r).sum(axis=(-2, -1))
        return xp.where(xp.isfinite(phi), phi, xp.inf)

    def step(self) -> None:
        xp = self.xp
        f_prev, J = self.linearise(self.h, self.start)
        # a non-finite Ĵ makes the Newton step non-finite, which the update reports; the
        # damped steps would instead shrink or reject the step, so check first for them
        if J is not None and self.algorithm.damping is not None and not all_finite(J):
            self.finish_with_best(ReturnCode.NonFinite)
            return
        start = self.start
        converged = self.test(f_prev)
        if converged is None:
            if self.retcode is ReturnCode.Success:
                self.keep(J, start)
            return
        first = self.freeze(converged)
        if first:
            self.keep(J, start, first)
            time_axis = f_prev.ndim - 2
            f_prev = f_prev[..., first:, :]
            if J is not None:
                J = J[(slice(None),) * time_axis + (slice(first, None),)]
        work = 3 * self.h.nbytes + f_prev.nbytes + (0 if J is None else J.nbytes)
        self.stats.peak_bytes = max(self.stats.peak_bytes, int(work))
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
            delta = affine_scan(J, rhs, zero, kernel=self.kernel, chunk_size=chunk)
            self.stats.scans += 1
            if damping is None:
                self.accept_step(delta)  # h += δ in place, measured in the same pass
                return
            new = self.segment(self.h) + delta
        if isinstance(damping, LineSearch):
            new = self.line_search(new)
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
        kernel, chunk = self.kernel, self.algorithm.chunk_size

        def scan(A: Any, b: Any, h0: Any) -> Any:
            return affine_scan(A, b, h0, kernel=kernel, chunk_size=chunk)

        def scan_reverse(A: Any, g: Any) -> Any:
            return affine_scan_transpose(A, g, kernel=kernel, chunk_size=chunk)[0]

        phi0 = 0.5 * (r * r).sum(axis=(-2, -1))
        trial = self.h.copy()
        lams = self.stats.extra.setdefault("lm_lambda", [])
        for _ in range(60):
            delta = lm_smoother(F, -r.reshape(B, *shape[-2:]), self.lam, scan=scan,
                                scan_reverse=scan_reverse).reshape(shape)
            self.stats.scans += 2
            self.segment(trial)[...] = old + delta
            phi = self.merit(trial)
            if bool((phi < phi0).all()):
                lams.append(self.lam)
                self.lam = max(self.lam * lm.decrease, lm.lam_min)
                return old + delta
            if self.lam >= lm.lam_max:
                break
            self.lam = min(self.lam * lm.increase, lm.lam_max)
        lams.append(self.lam)
        return old  # no decrease even at the largest damping: reported as Stalled

    def line_search(self, new: Any) -> Any:
        xp, ls = self.xp, self.algorithm.damping
        old = self.segment(self.h)
        delta = truncate_at_nonfinite(new - old, xp)
        phi0 = self.merit(self.h)
        s = xp.ones(self.problem.batch_shape, dtype=self.problem.dtype)
        accepted = xp.zeros(self.problem.batch_shape, dtype=bool)
        trial = self.h.copy()
        for _ in range(ls.max_backtracks):
            self.segment(trial)[...] = old + s[..., None, None] * delta
            phi = self.merit(trial)
            ok = phi <= (1 - 2 * ls.armijo * s) * phi0
            accepted = accepted | ok
            if bool(accepted.all()):
                break
            s = xp.where(accepted, s, s * ls.shrink)
        s = xp.where(accepted, s, 0.0 * s)  # no acceptable step: stay (reported as Stalled)
        self.stats.extra["last_step_size"] = float(_to_host(s.min()))
        return old + s[..., None, None] * delta


register(RecurrenceProblem, DEER)(DEERSolve)
