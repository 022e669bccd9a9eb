r"""The teacher-forced reconstruction loss and its gradient, derived by hand.

For a series :math:`x_0..x_{T-1}` (N observed dimensions), a model with M latent units and an
observation model :math:`\hat x = O(z)` with forcing signal :math:`\hat z = O^{-1}(x)`
(:mod:`pitsolve.models.observed`; the identity by default), :math:`\tilde z_0 = \hat z_0`,
the predictions :math:`z_t = F_\theta(\tilde z_{t-1})` of the forced recurrence (MATH.md §6)
enter the loss

.. math::

    L = \frac{1}{B (T-1) N} \sum_{b,t} \|O(z_t) - x_t\|^2
        + \lambda_l R_l(\theta) + \lambda_o R_o(\varphi).

The forced recurrence is solved in its predictions
(:class:`~pitsolve.models.ForcedPredictionModel`,
:math:`z_t = F(\check z_{t-1})`, :math:`\check z_{t-1} = (1 - a_{t-1}) z_{t-1} + a_{t-1}
\hat z_{t-1}`), so L depends on the solution's states alone and one adjoint solve with
:math:`G_t = \partial L/\partial z_t = \partial O^\top \bar x_t` gives the whole gradient
(MATH.md §4):

.. math::

    \mu_t = G_t + (1 - a_t) \odot J(\tilde z_t)^\top \mu_{t+1},\qquad
    \bar\theta = \sum_t (\partial F/\partial\theta)^\top(\tilde z_{t-1})\, \mu_t ,

with the Jacobians a DEER solve kept at its solution. The observation model's parameters φ
get :math:`\bar x` directly and, through the forcing signal, the cotangent
:math:`\bar{\hat z}_t = a_t \odot J(\tilde z_t)^\top \mu_{t+1}` of the adjoint.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .._arrays import array_namespace
from .._validation import as_float_array, check_finite
from ..models import ForcedModel, ForcedPredictionModel, Model, Params, split_observed
from ..models.base import to_namespace
from ..parallel.slices import TimeSlices, collective_check
from ..problems import RecurrenceProblem
from ..solution import SolverError, is_successful
from ..solve import solve
from .forcing import GTF, STF, NoForcing

__all__ = [
    "Regularization",
    "check_data",
    "forced_loss",
    "forced_problem",
    "latent_penalty",
    "loss_and_grad",
    "prediction_problem",
]


@dataclasses.dataclass(frozen=True, kw_only=True)
class Regularization:
    r"""The optional regularisers of the GTF reference, added to the loss.

    Parameters
    ----------
    latent
        :math:`\lambda_l`: :math:`\lambda_l \sum_k \|\theta_k - \theta_k^\star\|^2` over the
        latent model's parameters (:func:`latent_penalty`), :math:`\theta^\star` the model's
        :meth:`~pitsolve.models.Model.regularization_target` (1 for the self-connections ``a``
        of the shPLRNN family and the ALRNN, as in the GTF reference; 0 otherwise).
    observation
        :math:`\lambda_o`: the observation model's regulariser :math:`\lambda_o R_o`
        (:class:`~pitsolve.models.Affine`: :math:`(1 - s_{\min}/s_{\max})^2`;
        :class:`~pitsolve.models.Identity` has none).
    """

    latent: float = 0.0
    observation: float = 0.0

    def __post_init__(self) -> None:
        for name in ("latent", "observation"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v < np.inf:
                raise ValueError(f"{name} must be a finite number ≥ 0, got {v!r}")


def latent_penalty(model: Model, weight: float) -> tuple[float, Params]:
    r""":math:`R = \lambda_l \sum_k \|\theta_k - \theta_k^\star\|^2` and
    :math:`\partial R/\partial\theta_k = 2\lambda_l (\theta_k - \theta_k^\star)`, with
    :math:`\theta^\star` the model's
    :meth:`~pitsolve.models.Model.regularization_target` (zero for a model without one)."""
    target = getattr(model, "regularization_target", None)
    if target is None:
        diff = model.params
    else:
        diff = model.params.map(lambda v, t: v - t, target())
    value = weight * sum(float((d * d).sum()) for d in diff.values())
    return value, diff.map(lambda d: 2 * weight * d)


def check_data(data: Any, model: Model, *, name: str = "data", min_steps: int = 2) -> Any:
    """``data`` as a float array ``(T, N)`` or ``(B, T, N)`` with at least ``min_steps``
    steps that the model's observation model (identity: N ≤ M) fits."""
    data = as_float_array(data, name)
    if data.ndim not in (2, 3):
        raise ValueError(
            f"{name} must have shape (T, N) or (batch, T, N), got {data.ndim} dimensions "
            f"{data.shape}"
        )
    if data.shape[-2] < min_steps:
        raise ValueError(f"{name} must have at least {min_steps} time steps, got "
                         f"{data.shape[-2]}")
    latent, observation = split_observed(model)
    observation.check(data.shape[-1], latent.state_dim)
    if model.input_dim:
        raise ValueError("loss_and_grad trains autonomous models (input_dim = 0) on a series")
    check_finite(data, name)
    return data


def forced_problem(model: Model, data: Any, forcing: Any, alpha: float) -> RecurrenceProblem:
    """The forced recurrence of ``model`` driven by ``data`` as a :class:`RecurrenceProblem`:
    :class:`ForcedModel`, states :math:`\\tilde z_1..\\tilde z_{T-1}`."""
    latent, observation = split_observed(model)
    xp = array_namespace(data)
    T, N, M = data.shape[-2], data.shape[-1], latent.state_dim
    zhat = observation.forcing_signal(data, M)
    a = xp.asarray(forcing.weights(T - 1, M, N, alpha), dtype=data.dtype)
    a = xp.broadcast_to(a, (*data.shape[:-2], T - 1, M))
    inputs = xp.concatenate([zhat[..., 1:, :], a], axis=-1)
    return RecurrenceProblem(ForcedModel(latent), zhat[..., 0, :], inputs=inputs)


def prediction_problem(
    model: Model, data: Any, forcing: Any, alpha: float, zhat: Any = None, *,
    comm: Any = None, first: int = 0,
) -> RecurrenceProblem:
    r"""The forced recurrence in its predictions, the problem :func:`forced_loss` solves:
    :class:`ForcedPredictionModel`, states :math:`z_1..z_{T-1}`, :math:`h_0 = \hat z_0`, and
    inputs ``[ẑ_{t-1}, a_{t-1}]`` with :math:`a_0 = 1` (:math:`\check z_0 = \hat z_0`).
    ``zhat`` is the forcing signal (default: the observation model's).

    With ``comm`` the series is split by time over the ranks: ``data`` is this rank's slice
    with the row before it prepended (rank 0: its slice), whose first row has the global
    index ``first``; the problem's states are then :math:`z_{first+1}..`, its time axis split
    over ``comm``."""
    latent, observation = split_observed(model)
    xp = array_namespace(data)
    T, N, M = data.shape[-2], data.shape[-1], latent.state_dim
    if zhat is None:
        zhat = observation.forcing_signal(data, M)
    # a_k for the prediction steps k = first .. first + T - 2: a_0 = 1, a_k = w_{k-1}
    w = forcing.weights(T - 1, M, N, alpha, start=max(first - 1, 0))
    a = np.concatenate([np.ones((1, M)), w[: T - 2]]) if first == 0 else w
    a = xp.broadcast_to(xp.asarray(a, dtype=data.dtype), (*data.shape[:-2], T - 1, M))
    inputs = xp.concatenate([zhat[..., :-1, :], a], axis=-1)
    return RecurrenceProblem(ForcedPredictionModel(latent), zhat[..., 0, :], inputs=inputs,
                             comm=comm)


def loss_and_grad(
    model: Model,
    data: Any,
    *,
    forcing: GTF | STF | NoForcing | None = None,
    solver: Any = None,
    alpha: float | None = None,
    regularization: Regularization | None = None,
    comm: Any = None,
    **controls: Any,
) -> tuple[float, Params]:
    """The forced reconstruction loss L and dL/dθ (a :class:`Params` like ``model.params``).

    Parameters
    ----------
    model
        an autonomous model (M latent units), or an
        :class:`~pitsolve.models.ObservedModel` (a model with an observation model, whose
        parameters are trained too).
    data
        a series ``(T, N)`` or a batch ``(B, T, N)``; N ≤ M observed dimensions for the
        identity observation model.
    forcing
        :class:`GTF` (default α = 0.2), :class:`STF` or :class:`NoForcing`.
    solver
        the algorithm for the forced recurrence (default ``DEER()``): ``Sequential()`` gives
        GTF-BPTT, ``DEER()`` GTF-DEER, ``NewtonKrylov()`` the matrix-free variant.
    alpha
        the current α for adaptive GTF (default: the forcing's initial α).
    regularization
        optional :class:`Regularization` (λ_l, λ_o), added to L.
    comm
        optional MPI communicator: one long series split by time over its ranks, ``data``
        this rank's contiguous slice (rank order is time order; rank 0 at least 2 steps, the
        others at least 1). The ranks exchange one boundary row of the data, the forward solve
        and the adjoint run on the split time axis (DEER, ``Sequential``), and L and dL/dθ —
        the same on every rank — are those of the whole series.
    controls
        passed to :func:`pitsolve.solve` (``rtol``, ``maxiter``, ``fallback``, ...); the
        initial guess ``h_init`` of the predictions defaults to the forcing signal
        :math:`\\hat z_{1..T-1}`.

    Raises
    ------
    SolverError
        if the forward solve fails (its solution is attached).
    """
    loss, grads, _ = forced_loss(model, data, forcing=forcing, solver=solver, alpha=alpha,
                                 regularization=regularization, comm=comm, **controls)
    return loss, grads


def forced_loss(
    model: Model,
    data: Any,
    *,
    forcing: GTF | STF | NoForcing | None = None,
    solver: Any = None,
    alpha: float | None = None,
    regularization: Regularization | None = None,
    comm: Any = None,
    **controls: Any,
) -> tuple[float, Params, Any]:
    """:func:`loss_and_grad` that also returns the forward :class:`~pitsolve.Solution` (of
    :func:`prediction_problem`: its states are the predictions :math:`z_1..z_{T-1}`)."""
    from ..algorithms import DEER  # algorithms sit beside training; imported on use

    forcing = GTF() if forcing is None else forcing
    solver = DEER() if solver is None else solver
    slices = TimeSlices(comm)
    data = collective_check(comm, lambda: check_data(data, model,
                                                     min_steps=2 if slices.rank == 0 else 1))
    model = to_namespace(model, array_namespace(data))  # parameters follow the data
    if alpha is None:
        alpha = getattr(forcing, "initial_alpha", 0.0)
    latent, observation = split_observed(model)
    first = slices.rows(data.shape[-2])[0]
    before = slices.halo(data[..., -1, :], None)  # the row before this rank's slice
    if before is not None:  # the input of the slice's first prediction
        data = array_namespace(data).concatenate([before[..., None, :], data], axis=-2)
        first -= 1
    zhat = observation.forcing_signal(data, latent.state_dim)
    prob = prediction_problem(latent, data, forcing, alpha, zhat, comm=comm, first=first)
    # the data are the iterative solvers' first guess of the predictions (z_t ≈ ẑ_t once
    # the model fits): trained models converge in fewer Newton iterations than from h0
    controls.setdefault("h_init", zhat[..., 1:, :])
    sol = solve(prob, solver, **controls)
    if not is_successful(sol):
        raise SolverError(sol)
    N = data.shape[-1]
    err = observation.observe(sol.states, N) - data[..., 1:, :]
    count = slices.sum(err.size)
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging model gives loss inf/NaN
        loss = float(slices.sum(float((err * err).sum()))) / count
    G, obs_grads = observation.observe_vjp(sol.states, (2.0 / count) * err)
    cot = sol.vjp(G)  # (on split time: the parameters' cotangents summed over the ranks)
    grads = cot.params
    reg = Regularization() if regularization is None else regularization
    if reg.latent:
        value, penalty = latent_penalty(latent, reg.latent)
        loss += value
        grads = grads.map(lambda u, v: u + v, penalty)
    if latent is model:  # no observation model of its own: nothing more to train
        return loss, grads, sol
    if len(obs_grads):
        # through the forcing signal: ẑ_t enters the inputs of step t + 1 (ẑ_0 also h0)
        D = latent.state_dim
        zhat_bar = array_namespace(G).zeros_like(zhat)
        zhat_bar[..., :-1, :] = cot.inputs[..., :D]
        zhat_bar[..., 0, :] += cot.h0
        forcing_grads = observation.forcing_vjp(data, zhat_bar)
        value, penalty = observation.penalty(reg.observation)
        loss += value
        obs_grads = obs_grads.map(lambda u, v: slices.sum(u + v), forcing_grads)
        obs_grads = obs_grads.map(lambda u, v: u + v, penalty)
    return loss, model.with_latent_params(grads, obs_grads), sol
