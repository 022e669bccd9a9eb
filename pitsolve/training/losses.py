r"""The teacher-forced reconstruction loss and its gradient, derived by hand.

For a series :math:`x_0..x_{T-1}` (N observed dimensions) and a model with M ≥ N latent units,
:math:`\tilde z_0 = \hat z_0`, the forced states :math:`\tilde z_t` (t ≥ 1) solve the forced
recurrence (:class:`~pitsolve.training.forcing.ForcedModel`), the predictions are
:math:`z_t = F_\theta(\tilde z_{t-1})` and

.. math::

    L = \frac{1}{B (T-1) N} \sum_{b,t} \|z_t[:N] - x_t\|^2 .

With :math:`G_t = \partial L/\partial z_t`, the gradient is the direct part through the
predictions plus the part through the forced trajectory, by one adjoint solve:

.. math::

    \bar\theta = \sum_t (\partial F/\partial\theta)^\top(\tilde z_{t-1}) G_t
               + \operatorname{vjp}_\theta\big(g\big),\qquad
    g_{t} = J(\tilde z_{t})^\top G_{t+1}.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._validation import as_float_array, check_finite
from ..backends import array_namespace
from ..models.base import Model, Params
from ..problems import RecurrenceProblem
from ..solution import SolverError, is_successful
from ..solve import solve
from .forcing import GTF, STF, ForcedModel, NoForcing, forcing_signal

__all__ = ["check_data", "forced_loss", "forced_problem", "loss_and_grad"]


def check_data(data: Any, model: Model, *, name: str = "data") -> Any:
    """``data`` as a float array ``(T, N)`` or ``(B, T, N)`` fit for identity forcing."""
    data = as_float_array(data, name)
    if data.ndim not in (2, 3):
        raise ValueError(
            f"{name} must have shape (T, N) or (batch, T, N), got {data.ndim} dimensions "
            f"{data.shape}"
        )
    if data.shape[-2] < 2:
        raise ValueError(f"{name} must have at least 2 time steps, got {data.shape[-2]}")
    if data.shape[-1] > model.state_dim:
        raise ValueError(
            f"{name} has N={data.shape[-1]} observed dimensions but the model has only "
            f"{model.state_dim} latent units; identity forcing needs N ≤ M"
        )
    if model.input_dim:
        raise ValueError("loss_and_grad trains autonomous models (input_dim = 0) on a series")
    check_finite(data, name)
    return data


def forced_problem(model: Model, data: Any, forcing: Any, alpha: float) -> RecurrenceProblem:
    """The forced recurrence of ``model`` driven by ``data`` as a :class:`RecurrenceProblem`."""
    xp = array_namespace(data)
    T, N, M = data.shape[-2], data.shape[-1], model.state_dim
    zhat = forcing_signal(data, M)
    a = xp.asarray(forcing.weights(T - 1, M, N, alpha), dtype=data.dtype)
    a = xp.broadcast_to(a, (*data.shape[:-2], T - 1, M))
    inputs = xp.concatenate([zhat[..., 1:, :], a], axis=-1)
    return RecurrenceProblem(ForcedModel(model), zhat[..., 0, :], inputs=inputs)


def loss_and_grad(
    model: Model,
    data: Any,
    *,
    forcing: GTF | STF | NoForcing | None = None,
    solver: Any = None,
    alpha: float | None = None,
    **controls: Any,
) -> tuple[float, Params]:
    """The forced reconstruction loss L and dL/dθ (a :class:`Params` like ``model.params``).

    Parameters
    ----------
    model
        an autonomous model (M latent units).
    data
        a series ``(T, N)`` or a batch ``(B, T, N)``, N ≤ M observed dimensions.
    forcing
        :class:`GTF` (default α = 0.2), :class:`STF` or :class:`NoForcing`.
    solver
        the algorithm for the forced recurrence (default ``DEER()``): ``Sequential()`` gives
        GTF-BPTT, ``DEER()`` GTF-DEER, ``NewtonKrylov()`` the matrix-free variant.
    alpha
        the current α for adaptive GTF (default: the forcing's initial α).
    controls
        passed to :func:`pitsolve.solve` (``rtol``, ``maxiter``, ``fallback``, ...).

    Raises
    ------
    SolverError
        if the forward solve fails (its solution is attached).
    """
    loss, grads, _ = forced_loss(model, data, forcing=forcing, solver=solver, alpha=alpha,
                                 **controls)
    return loss, grads


def forced_loss(
    model: Model,
    data: Any,
    *,
    forcing: GTF | STF | NoForcing | None = None,
    solver: Any = None,
    alpha: float | None = None,
    **controls: Any,
) -> tuple[float, Params, Any]:
    """:func:`loss_and_grad` that also returns the forward :class:`~pitsolve.Solution`."""
    from ..algorithms import DEER  # algorithms sit beside training; imported on use

    forcing = GTF() if forcing is None else forcing
    solver = DEER() if solver is None else solver
    data = check_data(data, model)
    if alpha is None:
        alpha = getattr(forcing, "initial_alpha", 0.0)
    xp = array_namespace(data)
    prob = forced_problem(model, data, forcing, alpha)
    sol = solve(prob, solver, **controls)
    if not is_successful(sol):
        raise SolverError(sol)
    work = prob.working_model().base
    prev = xp.concatenate([prob.h0[..., None, :], sol.states[..., :-1, :]], axis=-2)
    pred = work.f(prev)
    N = data.shape[-1]
    err = pred[..., :N] - data[..., 1:, :]
    count = err.size
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging model gives loss inf/NaN
        loss = float((err * err).sum()) / count
    G = xp.zeros_like(pred)
    G[..., :N] = (2.0 / count) * err
    g_states = xp.zeros_like(sol.states)
    g_states[..., :-1, :] = work.vjp_h(prev[..., 1:, :], None, G[..., 1:, :])
    through_states = sol.vjp(g_states).params
    direct = work.vjp_params(prev, None, G)
    grads = direct.map(lambda u, v: u + v, through_states)
    return loss, grads, sol
