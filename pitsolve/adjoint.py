r"""Adjoints (vector-Jacobian products) of solutions, derived by hand.

For a nonlinear recurrence :math:`h_t = f(h_{t-1}, x_t; \theta)` solved to :math:`r(h^*) = 0`,
the implicit-function theorem gives BPTT's adjoint recurrence, one reverse scan with the full
Jacobians whatever algorithm solved the forward pass (MATH.md §4):

.. math::

    \lambda_T = g_T,\quad \lambda_t = g_t + J_{t+1}^\top \lambda_{t+1},\qquad
    \bar\theta = \sum_t (\partial f/\partial\theta)^\top \lambda_t,\quad
    \bar h_0 = J_1^\top \lambda_1,\quad \bar x_t = (\partial f/\partial x)^\top\lambda_t.

Three adjoint rules compute λ. The solver that produced a solution chooses one and stores it
in the solution's ``adjoint`` field, beside the ``backend`` it ran on, where the adjoint runs
too: :class:`ScanAdjoint` (one transposed parallel scan of the Jacobians),
:class:`MatrixFreeAdjoint` (GMRES on :math:`J_F^\top\lambda = g` with VJPs only: the
:class:`~pitsolve.operators.TrajectoryJacobian` that Newton–Krylov also uses, no (T, D, D)
array) and :class:`BPTTAdjoint` (the model's sequential backward loop, compiled for built-in
models on the Numba backend).

For the affine recurrence :math:`h_t = A_t h_{t-1} + b_t` and a cotangent
:math:`g_t = \partial L / \partial h_t`, one transposed scan gives

.. math::

    \lambda_T = g_T,\quad \lambda_t = g_t + A_{t+1}^\top \lambda_{t+1},\qquad
    \bar b_t = \lambda_t,\quad \bar h_0 = A_1^\top \lambda_1,\quad
    \bar A_t = \lambda_t h_{t-1}^\top \ (\text{dense}),\ \lambda_t \odot h_{t-1}\ (\text{diagonal}).

**Windows.** By reverse causality, λ on a window ``[a, b)`` depends only on g there and on
:math:`\lambda_b`, which enters as :math:`\lambda_{b-1} = g_{b-1} + J_b^\top\lambda_b`. So the
transposed scan runs window by window from the last to the first, each window handing
:math:`c_a = J_a^\top\lambda_a` (the scan's cotangent of the state before it) to the window
before, and the sums :math:`\bar\theta` add up over the windows; :math:`\bar h_0 = c_1`. Only
one window's Jacobians and λ are held (:class:`ScanAdjoint` with ``window``,
:class:`MatrixFreeAdjoint` likewise with GMRES in place of the scan).
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import numpy as np

from ._arrays import array_namespace
from ._validation import as_float_array
from .models.base import Model
from .operators import TrajectoryJacobian
from .parallel.slices import TimeSlices
from .problems import LinearRecurrenceProblem, RecurrenceProblem
from .solution import Solution

__all__ = [
    "BPTTAdjoint",
    "Cotangents",
    "Deferred",
    "MatrixFreeAdjoint",
    "ScanAdjoint",
    "check_cotangent",
]


class Cotangents:
    """Cotangents of a solution's inputs, as attributes (e.g. ``.A``, ``.b``, ``.h0``).

    A part given as a :class:`Deferred` is computed when first read (then kept), so a caller
    that needs only ``.params`` never pays for ``.inputs``.
    """

    def __init__(self, **parts: Any):
        self._deferred = {k: v for k, v in parts.items() if isinstance(v, Deferred)}
        self.__dict__.update({k: v for k, v in parts.items() if not isinstance(v, Deferred)})
        self._names = tuple(parts)

    def __getattr__(self, name: str) -> Any:
        deferred = self.__dict__.get("_deferred", {})
        if name not in deferred:
            raise AttributeError(f"Cotangents has no part {name!r}")
        value = deferred.pop(name).compute()
        setattr(self, name, value)
        return value

    def __repr__(self) -> str:
        return f"Cotangents({', '.join(self._names)})"


class Deferred:
    """A cotangent computed on first use: ``Deferred(fn, *args)`` holds ``fn(*args)``."""

    def __init__(self, fn: Any, *args: Any):
        self.fn, self.args = fn, args

    def compute(self) -> Any:
        return self.fn(*self.args)


def check_cotangent(sol: Solution, g: Any) -> Any:
    """``g`` validated against ``sol.states``: same shape, floating, same array type."""
    g = as_float_array(g, "g")
    array_namespace(g, sol.states)
    if g.shape != sol.states.shape:
        raise ValueError(f"g must have the shape of sol.states {sol.states.shape}, got {g.shape}")
    return g.astype(sol.states.dtype, copy=False)


def _previous(before: Any, states: Any, xp: Any) -> Any:
    """h_{t-1} for the steps of ``states``, ``before`` the state before the first (h0)."""
    return xp.concatenate([before[..., None, :], states[..., :-1, :]], axis=-2)


def _jacobians(model: Any, prev: Any, x: Any) -> Any:
    r"""The Jacobians :math:`J_t = \partial f/\partial h\,(h_{t-1}, x_t)`, ``(..., D, D)`` or
    ``(..., D)`` for a model of diagonal structure."""
    if model.jacobian_structure == "diagonal":
        return model.jacobian(prev, x)
    return model.f_and_jacobian(prev, x)[1]


def _from_lambda(sol: Solution, model: Any, prev: Any, lam: Any) -> Cotangents:
    """The cotangents of a :class:`RecurrenceProblem`'s inputs from λ, each computed when
    first read (one VJP pass each). On a time axis split over ranks: ``.params`` summed over
    the ranks, computed now (a collective), ``.h0`` zeros after rank 0."""
    p: RecurrenceProblem = sol.problem
    x = p.inputs
    x0 = None if x is None else x[..., 0, :]
    slices = TimeSlices(getattr(p, "comm", None))
    if slices.split:
        params = model.vjp_params(prev, x, lam)
        params = type(params)({k: slices.sum(v) for k, v in params.items()})
        h0 = (Deferred(model.vjp_h, prev[..., 0, :], x0, lam[..., 0, :]) if slices.rank == 0
              else sol.backend.xp.zeros_like(p.h0))
    else:
        params = Deferred(model.vjp_params, prev, x, lam)
        h0 = Deferred(model.vjp_h, p.h0, x0, lam[..., 0, :])
    return Cotangents(
        params=params, h0=h0,
        inputs=None if x is None else Deferred(model.vjp_inputs, prev, x, lam),
    )


class _Rule:
    """What the adjoint rules share: checks, and the model on the solution's backend."""

    def vjp(self, sol: Solution, g: Any) -> Cotangents:
        """Cotangents of the solution's inputs given ``g = dL/dstates``: ``.params`` (a
        :class:`~pitsolve.models.Params`), ``.h0`` and ``.inputs`` (None without inputs)
        of a :class:`~pitsolve.RecurrenceProblem`'s solution."""
        g = check_cotangent(sol, g)
        if not isinstance(sol.problem, RecurrenceProblem):
            raise TypeError(f"{type(self).__name__} differentiates solutions of a "
                            f"RecurrenceProblem, not of a {type(sol.problem).__name__}")
        if sol.problem.comm is not None and isinstance(self, BPTTAdjoint):
            raise ValueError("BPTTAdjoint does not run on a time axis split over ranks (comm=): "
                             "ScanAdjoint and MatrixFreeAdjoint do")
        model = sol.backend.bind(sol.problem.working_model())
        return self._recurrence(sol, model, g)

    def _recurrence(self, sol: Solution, model: Any, g: Any) -> Cotangents:
        raise NotImplementedError  # pragma: no cover - abstract


@dataclasses.dataclass(frozen=True)
class ScanAdjoint(_Rule):
    r"""λ by one transposed scan: of :math:`A_t` for a linear problem, of the Jacobians
    :math:`J_t` for a nonlinear one — those the forward solve kept at the trajectory
    (``sol.jacobians``, e.g. a successful DEER solve), else evaluated here; O(T D²) memory
    for dense Jacobians. The rule of the scans, of DEER and of ``Sequential`` off the Numba
    backend.

    With ``window`` (steps; a nonlinear problem in one process), the transposed scan runs
    window by window from the last to the first (module docstring): the Jacobians of one
    window are evaluated at a time from the stored states (``sol.jacobians`` is not used),
    :math:`J_a^\top\lambda_a` is carried into the window before, and the parameter
    cotangents are summed over the windows. Memory O(L (D² + D)) besides the states, the
    cotangent g and ``.inputs``; the states may be a ``numpy.memmap``. The three cotangents
    come from one pass, run when the first of them is read. The rule of DEER solved in
    windows (the forward solve's window length).

    Parameters
    ----------
    method, chunk_size
        the transposed scan's (:meth:`pitsolve.backends.Backend.scan_transpose`): those of the
        forward solve.
    window
        steps per window (None: all T at once).
    """

    method: str = "blocked"
    chunk_size: int | None = None
    window: int | None = None

    def __post_init__(self) -> None:
        w = self.window
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise ValueError(f"window must be None or an integer ≥ 1, got {w!r}")

    def vjp(self, sol: Solution, g: Any) -> Cotangents:
        r"""Cotangents given ``g = dL/dstates``: ``.params``, ``.h0``, ``.inputs`` for a
        :class:`~pitsolve.RecurrenceProblem`; for a
        :class:`~pitsolve.LinearRecurrenceProblem` ``.A``, ``.b``, ``.h0``:
        :math:`\bar b = \lambda`, :math:`\bar h_0 = A_1^\top\lambda_1`,
        :math:`\bar A_t = \lambda_t h_{t-1}^\top` (diagonal: :math:`\lambda_t \odot
        h_{t-1}`)."""
        if not isinstance(sol.problem, LinearRecurrenceProblem):
            return super().vjp(sol, g)
        g = check_cotangent(sol, g)
        p: LinearRecurrenceProblem = sol.problem
        # on a time axis split over ranks: this rank's slice; ``.h0`` rank 0's (zeros on the
        # others, so that the sum over ranks is the cotangent)
        lam, h0_bar = self._scan(sol, p.A, g)
        h_prev = _previous(TimeSlices(p.comm).before(sol.states, p.h0), sol.states,
                           sol.backend.xp)
        if p.structure == "diagonal":
            A_bar = lam * h_prev
        else:
            A_bar = lam[..., :, None] * h_prev[..., None, :]
        return Cotangents(A=A_bar, b=lam, h0=h0_bar)

    def _scan(self, sol: Solution, A: Any, g: Any) -> tuple[Any, Any]:
        return TimeSlices(sol.problem.comm).scan_transpose(
            sol.backend, A, g, method=self.method, chunk_size=self.chunk_size)

    def _recurrence(self, sol: Solution, model: Any, g: Any) -> Cotangents:
        if self.window is not None and self.window < g.shape[-2]:
            if sol.problem.comm is not None:
                raise ValueError("ScanAdjoint(window=...) does not run on a time axis split "
                                 "over ranks (comm=): use window=None")
            return self._windows(sol, model, g)
        before = TimeSlices(sol.problem.comm).before(sol.states, sol.problem.h0)
        prev = _previous(before, sol.states, sol.backend.xp)
        x = sol.problem.inputs
        J = sol.jacobians
        if J is None:
            J = _jacobians(model, prev, x)
        lam = self._scan(sol, J, g)[0]
        return _from_lambda(sol, model, prev, lam)

    def _windows(self, sol: Solution, model: Any, g: Any) -> Cotangents:
        """The cotangents by windows of ``self.window`` steps, last to first; the pass runs
        when the first of them is read, and gives all three."""
        parts: list[Any] = []

        def part(i: int) -> Any:
            if not parts:
                parts.extend(self._reverse_pass(sol, model, g))
            return parts[i]

        x = sol.problem.inputs
        return Cotangents(params=Deferred(part, 0), h0=Deferred(part, 1),
                          inputs=None if x is None else Deferred(part, 2))

    def _reverse_pass(self, sol: Solution, model: Any, g: Any) -> tuple[Any, Any, Any]:
        r"""``(params, h0, inputs)`` cotangents: on each window ``[a, b)`` from the last,
        :math:`\lambda_t = g_t + J_{t+1}^\top\lambda_{t+1}` with :math:`J_b^\top\lambda_b`
        (``carry``) added to :math:`g_{b-1}`, then that window's VJPs."""
        p: RecurrenceProblem = sol.problem
        xp, states, x = sol.backend.xp, sol.states, p.inputs
        T, L = g.shape[-2], self.window
        params: Any = None
        inputs = None if x is None else xp.empty(x.shape, dtype=g.dtype)
        carry = None  # J_bᵀ λ_b for the window ending at b
        for a in range(((T - 1) // L) * L, -1, -L):
            b = min(a + L, T)
            # h_{t-1} on [a, b): a view of the states but in the first window
            prev = (_previous(p.h0, states[..., :b, :], xp) if a == 0
                    else states[..., a - 1 : b - 1, :])
            xs = None if x is None else x[..., a:b, :]
            gw = g[..., a:b, :]
            if carry is not None:
                gw = gw.copy()
                gw[..., -1, :] += carry
            J = _jacobians(model, prev, xs)
            lam, carry = self._scan(sol, J, gw)
            del J, gw
            got = model.vjp_params(prev, xs, lam)
            params = got if params is None else type(got)({k: params[k] + got[k] for k in got})
            if inputs is not None:
                inputs[..., a:b, :] = model.vjp_inputs(prev, xs, lam)
            del lam
        return params, carry, inputs


@dataclasses.dataclass(frozen=True)
class MatrixFreeAdjoint(_Rule):
    r"""λ from :math:`J_F^\top\lambda = g` by GMRES with VJPs only (the
    :class:`~pitsolve.operators.TrajectoryJacobian`), O(T D) memory: the rule of
    :class:`~pitsolve.NewtonKrylov`.

    With ``window`` (steps), the time axis is solved in windows from the last to the first:
    by reverse causality λ on ``[a, b)`` depends only on g there and on :math:`\lambda_b`,
    which enters as :math:`g_{b-1} + J_b^\top\lambda_b`. The Krylov vectors and the
    linearisation then hold one window, not all T steps (the forward solve's windows, so the
    adjoint needs no more memory than the solve).

    Parameters
    ----------
    window
        steps per window (None: all T at once).
    restart, maxiter
        GMRES restart length and inner iterations at most per window.
    """

    window: int | None = None
    restart: int = 30
    maxiter: int = 1500

    def _recurrence(self, sol: Solution, model: Any, g: Any) -> Cotangents:
        xp = sol.backend.xp
        slices = TimeSlices(sol.problem.comm)
        before = slices.before(sol.states, sol.problem.h0)
        prev, x = _previous(before, sol.states, xp), sol.problem.inputs
        rtol = 10 * float(np.finfo(g.dtype).eps) ** 0.75
        T = g.shape[-2]
        window = T if self.window is None else max(1, min(int(self.window), T))
        if slices.split:  # one window over all ranks: this rank's slice
            window = T
        lam = xp.empty_like(g)
        carry = None  # J_bᵀ λ_b for the window ending at b
        for a in range(((T - 1) // window) * window, -1, -window):
            b = min(a + window, T)
            rhs = g[..., a:b, :].copy()
            if carry is not None:
                rhs[..., -1, :] += carry
            xs = None if x is None else x[..., a:b, :]
            op = TrajectoryJacobian(model, prev[..., a:b, :], xs, sol.backend,
                                    slices=slices if slices.split else None)
            result = op.solve(rhs, transpose=True, rtol=rtol, restart=self.restart,
                              maxiter=self.maxiter)
            if not result.converged:
                raise RuntimeError(
                    f"the matrix-free adjoint solve did not reach rtol={rtol:g} in "
                    f"{result.iterations} GMRES iterations; the forward trajectory is probably "
                    "not contracting: use a DEER solution's vjp"
                )
            lam[..., a:b, :] = result.x
            if a > 0:  # J_aᵀ λ_a, for the window before
                xa = None if x is None else x[..., a, :]
                carry = model.vjp_h(prev[..., a, :], xa, lam[..., a, :])
        return _from_lambda(sol, model, prev, lam)


@dataclasses.dataclass(frozen=True)
class BPTTAdjoint(_Rule):
    """The model's backpropagation through time (:meth:`~pitsolve.models.Model.bptt`), a
    sequential backward loop, compiled for the built-in models on the Numba backend: the
    rule of ``Sequential`` there."""

    def _recurrence(self, sol: Solution, model: Any, g: Any) -> Cotangents:
        p = sol.problem
        # (a duck-typed model without ``bptt``: the generic loop of its VJPs)
        bptt = getattr(model, "bptt", None) or functools.partial(Model.bptt, model)
        params_bar, h0_bar, inputs_bar = bptt(p.h0, p.inputs, sol.states, g)
        return Cotangents(params=params_bar, h0=h0_bar, inputs=inputs_bar)
