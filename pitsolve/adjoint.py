r"""Adjoints (vector-Jacobian products) of solutions, derived by hand.

For a nonlinear recurrence :math:`h_t = f(h_{t-1}, x_t; \theta)` solved to :math:`r(h^*) = 0`,
the implicit-function theorem gives BPTT's adjoint recurrence, one reverse scan with the full
Jacobians whatever algorithm solved the forward pass (MATH.md §4):

.. math::

    \lambda_T = g_T,\quad \lambda_t = g_t + J_{t+1}^\top \lambda_{t+1},\qquad
    \bar\theta = \sum_t (\partial f/\partial\theta)^\top \lambda_t,\quad
    \bar h_0 = J_1^\top \lambda_1,\quad \bar x_t = (\partial f/\partial x)^\top\lambda_t.

Three routes compute λ, chosen by the solver that produced the solution
(``sol.stats["adjoint"]``): ``"scan"`` (one transposed parallel scan of the Jacobians),
``"matrix-free"`` (GMRES on :math:`J_F^\top\lambda = g` with VJPs only, from the model's
``linearize`` evaluated once, preconditioned by the transposed diagonal scan: no (T, D, D)
array) and ``"bptt"`` (the model's sequential backward loop, compiled for built-in models).

For the affine recurrence :math:`h_t = A_t h_{t-1} + b_t` and a cotangent
:math:`g_t = \partial L / \partial h_t`, one transposed scan gives

.. math::

    \lambda_T = g_T,\quad \lambda_t = g_t + A_{t+1}^\top \lambda_{t+1},\qquad
    \bar b_t = \lambda_t,\quad \bar h_0 = A_1^\top \lambda_1,\quad
    \bar A_t = \lambda_t h_{t-1}^\top \ (\text{dense}),\ \lambda_t \odot h_{t-1}\ (\text{diagonal}).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._validation import as_float_array
from .backends import array_namespace
from .kernels import affine_scan_transpose
from .models.base import linearize
from .problems import LinearRecurrenceProblem, RecurrenceProblem
from .solution import Solution, register_vjp

__all__ = ["Cotangents", "Deferred", "check_cotangent", "recurrence_vjp"]


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


@register_vjp(LinearRecurrenceProblem)
def _linear_vjp(sol: Solution, g: Any) -> Cotangents:
    p: LinearRecurrenceProblem = sol.problem
    xp = p.xp
    g = check_cotangent(sol, g)
    kernel = sol.stats.extra.get("kernel", "numba")
    lam, h0_bar = affine_scan_transpose(p.A, g, kernel=kernel)
    h_prev = xp.concatenate([p.h0[..., None, :], sol.states[..., :-1, :]], axis=-2)
    A_bar = lam * h_prev if p.structure == "diagonal" else lam[..., :, None] * h_prev[..., None, :]
    return Cotangents(A=A_bar, b=lam, h0=h0_bar)


def _previous(problem: RecurrenceProblem, states: Any) -> Any:
    """h_{t-1} for t = 1..T."""
    xp = problem.xp
    return xp.concatenate([problem.h0[..., None, :], states[..., :-1, :]], axis=-2)


def _lambda_scan(sol: Solution, model: Any, prev: Any, x: Any, g: Any, kernel: str) -> Any:
    """λ by one transposed scan of the Jacobians: those the forward solve kept at the
    trajectory (``sol.jacobians``), else evaluated here."""
    J = sol.jacobians
    if J is None:
        if model.jacobian_structure == "diagonal":
            J = model.jacobian(prev, x)
        else:
            J = model.f_and_jacobian(prev, x)[1]
    return affine_scan_transpose(J, g, kernel=kernel)[0]


def _lambda_matrix_free(model: Any, prev: Any, x: Any, g: Any, kernel: str, rtol: float,
                        window: int | None = None) -> Any:
    r"""Solve :math:`J_F^\top \lambda = g`, :math:`(J_F^\top\lambda)_t = \lambda_t -
    J_{t+1}^\top\lambda_{t+1}`, with GMRES and VJPs only.

    With ``window`` (steps), the time axis is solved in windows from the last to the first:
    by reverse causality λ on ``[a, b)`` depends only on g there and on :math:`\lambda_b`,
    which enters as :math:`g_{b-1} + J_b^\top\lambda_b`. The Krylov vectors and the
    linearisation then hold one window, not all T steps (the forward solve's windows, so the
    adjoint needs no more memory than the solve).
    """
    xp = array_namespace(g)
    T = g.shape[-2]
    window = T if window is None else max(1, min(int(window), T))
    lam = xp.empty_like(g)
    carry = None  # J_bᵀ λ_b for the window ending at b
    for a in range(((T - 1) // window) * window, -1, -window):
        b = min(a + window, T)
        rhs = g[..., a:b, :].copy()
        if carry is not None:
            rhs[..., -1, :] += carry
        xs = None if x is None else x[..., a:b, :]
        lam[..., a:b, :] = _window_adjoint(model, prev[..., a:b, :], xs, rhs, kernel, rtol)
        if a > 0:  # J_aᵀ λ_a, for the window before
            xa = None if x is None else x[..., a, :]
            carry = model.vjp_h(prev[..., a, :], xa, lam[..., a, :])
    return lam


def _window_adjoint(model: Any, prev: Any, x: Any, g: Any, kernel: str, rtol: float) -> Any:
    r"""λ of one window: ``J_Fᵀ λ = g`` with :math:`\lambda_{b}` = 0 past its end."""
    xp = array_namespace(g)
    if xp.__name__ == "cupy":  # pragma: no cover - needs a GPU
        from cupyx.scipy.sparse.linalg import LinearOperator, gmres
    else:
        from scipy.sparse.linalg import LinearOperator, gmres
    shape, n, dtype = g.shape, g.size, g.dtype
    # J_{t+1} for t < the window's end, linearised once: each product is then a VJP
    lin = None
    if shape[-2] > 1:
        lin = linearize(model, prev[..., 1:, :], None if x is None else x[..., 1:, :])

    def jvp_FT(lam: Any) -> Any:
        lam = lam.reshape(shape)
        out = xp.empty_like(lam)
        out[..., -1, :] = 0
        if lin is not None:
            lin.vjp(lam[..., 1:, :], out=out[..., :-1, :])
        return xp.subtract(lam, out, out=out).reshape(-1)

    d = model.diagonal_jacobian(prev, x)

    def precondition(y: Any) -> Any:
        return affine_scan_transpose(d, y.reshape(shape), kernel=kernel)[0].ravel()

    A = LinearOperator((n, n), matvec=jvp_FT, dtype=dtype)
    M = LinearOperator((n, n), matvec=precondition, dtype=dtype)
    lam, info = gmres(A, g.ravel(), rtol=rtol, atol=0.0, restart=30, maxiter=50, M=M)
    if info != 0:
        raise RuntimeError(
            f"the matrix-free adjoint solve did not reach rtol={rtol:g} (GMRES info={info}); "
            "the forward trajectory is probably not contracting: use a DEER solution's vjp"
        )
    return lam.reshape(shape).astype(dtype, copy=False)


@register_vjp(RecurrenceProblem)
def recurrence_vjp(sol: Solution, g: Any) -> Cotangents:
    """Cotangents ``.params`` (a :class:`~pitsolve.models.Params`), ``.h0`` and ``.inputs``
    (None without inputs) of L given ``g = dL/dstates``, at the solution's trajectory.

    λ is computed here; the three cotangents from it when first read (each one VJP pass)."""
    p: RecurrenceProblem = sol.problem
    g = check_cotangent(sol, g)
    model = p.working_model()
    route = sol.stats.extra.get("adjoint", "scan")
    kernel = sol.stats.extra.get("kernel", "numba")
    if route == "bptt" and hasattr(model, "bptt"):
        params_bar, h0_bar, inputs_bar = model.bptt(p.h0, p.inputs, sol.states, g)
        return Cotangents(params=params_bar, h0=h0_bar, inputs=inputs_bar)
    prev, x = _previous(p, sol.states), p.inputs
    if route == "matrix-free":
        rtol = 10 * float(np.finfo(g.dtype).eps) ** 0.75
        window = sol.stats.extra.get("window")
        lam = _lambda_matrix_free(model, prev, x, g, kernel, rtol, window)
    else:
        lam = _lambda_scan(sol, model, prev, x, g, kernel)
    x0 = None if x is None else x[..., 0, :]
    return Cotangents(
        params=Deferred(model.vjp_params, prev, x, lam),
        h0=Deferred(model.vjp_h, p.h0, x0, lam[..., 0, :]),
        inputs=None if x is None else Deferred(model.vjp_inputs, prev, x, lam),
    )
