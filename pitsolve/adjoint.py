r"""Adjoints (vector-Jacobian products) of solutions, derived by hand.

For the affine recurrence :math:`h_t = A_t h_{t-1} + b_t` and a cotangent
:math:`g_t = \partial L / \partial h_t`, one transposed scan gives

.. math::

    \lambda_T = g_T,\quad \lambda_t = g_t + A_{t+1}^\top \lambda_{t+1},\qquad
    \bar b_t = \lambda_t,\quad \bar h_0 = A_1^\top \lambda_1,\quad
    \bar A_t = \lambda_t h_{t-1}^\top \ (\text{dense}),\ \lambda_t \odot h_{t-1}\ (\text{diagonal}).
"""

from __future__ import annotations

from typing import Any

from ._validation import as_float_array
from .backends import array_namespace
from .kernels import affine_scan_transpose
from .problems import LinearRecurrenceProblem
from .solution import Solution, register_vjp

__all__ = ["Cotangents", "check_cotangent"]


class Cotangents:
    """Cotangents of a solution's inputs, as attributes (e.g. ``.A``, ``.b``, ``.h0``)."""

    def __init__(self, **parts: Any):
        self.__dict__.update(parts)

    def __repr__(self) -> str:
        return f"Cotangents({', '.join(self.__dict__)})"


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
