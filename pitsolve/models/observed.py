r"""Observation models: how latent states are observed, and how the data force them.

A model with M latent units :math:`z_t` is trained on N observed dimensions :math:`x_t` through
an observation model :math:`\hat x_t = O(z_t)`; teacher forcing inverts it for the forcing
signal :math:`\hat z_t = O^{-1}(x_t)` (MATH.md §6):

- :class:`Identity` (N ≤ M): :math:`\hat x_t = z_t[{:}N]`, :math:`\hat z_t = [x_t; 0]`; no
  parameters.
- :class:`Affine`: :math:`\hat x_t = B z_t + b`, :math:`\hat z_t = B^+(x_t - b)` with the
  Moore–Penrose pseudo-inverse (least squares for N ≥ M, minimum norm for N < M), and the
  regulariser :math:`R_o = \lambda_o (1 - s_{\min}/s_{\max})^2` of the singular values of
  B, which keeps B well conditioned (its inverse is the forcing).

:class:`ObservedModel` joins a latent model and an observation model into one model whose
parameters are both (the observation's prefixed ``obs.``), so that ``loss_and_grad``, ``fit``,
the optimisers and checkpoints train them together. Every derivative is written by hand:
:meth:`ObservationModel.observe_vjp` (the loss through :math:`\hat x`),
:meth:`ObservationModel.forcing_vjp` (through :math:`\hat z`, the pseudo-inverse's
derivative) and :meth:`ObservationModel.penalty`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .._arrays import array_namespace
from .._validation import as_float_array
from .base import Model, Parametrized, Params

__all__ = ["Affine", "Identity", "ObservationModel", "ObservedModel", "split_observed"]

PREFIX = "obs."


def _rows(a: Any) -> Any:
    """``a (..., n)`` as rows ``(-1, n)``."""
    return a.reshape(-1, a.shape[-1])


class ObservationModel(Parametrized):
    r"""Base of observation models: :math:`\hat x = O(z)` and the forcing signal
    :math:`\hat z = O^{-1}(x)`, with hand-derived cotangents.

    Subclasses implement :meth:`observe`, :meth:`observe_vjp`, :meth:`forcing_signal` and,
    if they have parameters, :meth:`forcing_vjp` and :meth:`penalty`.
    """

    def __init__(self, params: Params | None = None):
        self._params = Params() if params is None else params
        self._derived: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"

    def config(self) -> dict[str, Any]:
        """The constructor's keywords other than the arrays (see :meth:`Model.config`)."""
        return {}

    @classmethod
    def from_config(cls, config: Mapping[str, Any], params: Mapping[str, Any]) -> Any:
        """The observation model with keywords ``config`` and parameters ``params``."""
        return cls(**config, **params)

    def check(self, observed: int, latent: int) -> None:
        """Raise ``ValueError`` unless N = ``observed`` dimensions fit M = ``latent`` units."""

    def observe(self, z: Any, observed: int) -> Any:  # pragma: no cover - abstract
        r""":math:`\hat x = O(z)`, ``(..., N)`` from ``z (..., M)``."""
        raise NotImplementedError

    def observe_vjp(self, z: Any, e: Any) -> tuple[Any, Params]:  # pragma: no cover - abstract
        r"""``(∂/∂z ⟨e, O(z)⟩ (..., M), ∂/∂φ Σ ⟨e, O(z)⟩)``: the cotangent of the states and
        of the parameters φ (summed over all leading axes) for ``e (..., N)``."""
        raise NotImplementedError

    def forcing_signal(self, x: Any, latent: int) -> Any:  # pragma: no cover - abstract
        r""":math:`\hat z = O^{-1}(x)`, ``(..., M)`` from ``x (..., N)``."""
        raise NotImplementedError

    def forcing_vjp(self, x: Any, zhat_bar: Any) -> Params:
        r""":math:`\partial/\partial\varphi \sum \langle \bar{\hat z}, O^{-1}(x)\rangle`, the
        parameters' cotangent through the forcing signal (zero without parameters)."""
        return self.params.map(lambda v: array_namespace(v).zeros_like(v))

    def penalty(self, weight: float) -> tuple[float, Params]:
        """The observation regulariser :math:`R_o` with weight :math:`\\lambda_o` and its
        gradient (zero for a model without parameters)."""
        return 0.0, self.params.map(lambda v: array_namespace(v).zeros_like(v))


class Identity(ObservationModel):
    r"""The first N latent units are the observations (N ≤ M):

    .. math::

        \hat x_t = z_t[{:}N],\qquad \hat z_t = [x_t;\ 0].

    No parameters. With partial forcing (``GTF(partial=True)``) only the N observed units are
    forced, so the zeros never enter; with full forcing they pull the unobserved units to 0.
    """

    def check(self, observed: int, latent: int) -> None:
        if observed > latent:
            raise ValueError(
                f"data has N={observed} observed dimensions but the model has only {latent} "
                "latent units; identity forcing needs N ≤ M (use a larger latent size or an "
                "Affine observation model)"
            )

    def observe(self, z: Any, observed: int) -> Any:
        return z[..., :observed]

    def observe_vjp(self, z: Any, e: Any) -> tuple[Any, Params]:
        xp = array_namespace(z, e)
        G = xp.zeros(z.shape, dtype=z.dtype)
        G[..., : e.shape[-1]] = e
        return G, Params()

    def forcing_signal(self, x: Any, latent: int) -> Any:
        xp = array_namespace(x)
        self.check(x.shape[-1], latent)
        pad = xp.zeros((*x.shape[:-1], latent - x.shape[-1]), dtype=x.dtype)
        return xp.concatenate([x, pad], axis=-1)


class Affine(ObservationModel):
    r"""An affine observation model and its pseudo-inverse forcing (MATH.md §6):

    .. math::

        \hat x_t = B z_t + b,\qquad \hat z_t = P (x_t - b),\quad P = B^+,

    with parameters ``B (N, M)`` and ``b (N,)``, and the condition regulariser
    :math:`R_o = \lambda_o (1 - s_{\min}/s_{\max})^2` of the singular values of B.

    Parameters
    ----------
    B, b
        the arrays (``b`` defaults to zeros); see :meth:`init` for a random start.
    differentiate_forcing
        True (default): the gradient includes the path through the forcing signal
        :math:`\hat z = B^+(x - b)` (the exact gradient of the loss). False treats
        :math:`\hat z` as data, as the GTF reference implementation does (it computes the
        forcing signals before differentiating).

    Notes
    -----
    Cotangents, for :math:`\bar x` of :math:`\hat x`, :math:`\bar{\hat z}` of :math:`\hat z`
    and :math:`\bar P = \sum_t \bar{\hat z}_t (x_t - b)^\top`:

    .. math::

        \bar z = B^\top \bar x,\quad \bar B \mathrel{+}= \sum_t \bar x_t z_t^\top,\quad
        \bar b \mathrel{+}= \sum_t \bar x_t - P^\top \sum_t \bar{\hat z}_t,\\
        \bar B \mathrel{+}= -P^\top \bar P P^\top + (I - BP)\,\bar P^\top P P^\top
            + P^\top P\,\bar P^\top (I - PB),

    the derivative of the pseudo-inverse at constant rank (Golub & Pereyra 1973). With
    :math:`r = s_{\min}/s_{\max}` and singular vectors :math:`u_i, v_i`:
    :math:`\partial R_o/\partial B = -2\lambda_o (1 - r)\,(u_{\min} v_{\min}^\top
    - r\, u_{\max} v_{\max}^\top)/s_{\max}`.
    """

    def __init__(self, B: Any, b: Any = None, *, differentiate_forcing: bool = True):
        B = as_float_array(B, "B", min_ndim=2)
        if B.ndim != 2:
            raise ValueError(f"B must have shape (N, M), got {B.shape}")
        xp = array_namespace(B)
        b = xp.zeros(B.shape[0], dtype=B.dtype) if b is None else as_float_array(b, "b")
        if tuple(b.shape) != (B.shape[0],):
            raise ValueError(f"b must have shape ({B.shape[0]},) to match B {B.shape}")
        super().__init__(Params(B=B, b=b.astype(B.dtype)))
        self.differentiate_forcing = bool(differentiate_forcing)

    @classmethod
    def init(cls, observed: int, latent: int, *, seed: int | np.random.Generator | None = 0,
             dtype: Any = np.float64, differentiate_forcing: bool = True) -> Affine:
        r"""A random start as in the GTF reference: :math:`B \sim N(0, 2/M)^{N\times M}`
        (Kaiming), :math:`b = 0`."""
        rng = np.random.default_rng(seed)
        B = rng.normal(0.0, np.sqrt(2.0 / latent), (observed, latent)).astype(dtype)
        return cls(B, differentiate_forcing=differentiate_forcing)

    def __repr__(self) -> str:
        N, M = self.params["B"].shape
        return f"Affine(observed={N}, latent={M}, dtype={self.dtype})"

    def config(self) -> dict[str, Any]:
        return {"differentiate_forcing": self.differentiate_forcing}

    def check(self, observed: int, latent: int) -> None:
        if tuple(self.params["B"].shape) != (observed, latent):
            raise ValueError(
                f"the Affine observation model maps {self.params['B'].shape[1]} latent units to "
                f"{self.params['B'].shape[0]} observed dimensions; the data have N={observed} "
                f"and the model M={latent}"
            )

    def pinv(self) -> Any:
        """:math:`P = B^+`, ``(M, N)``, computed once per parameter set."""
        B = self.params["B"]
        return self.cached("pinv", lambda: array_namespace(B).linalg.pinv(B))

    def observe(self, z: Any, observed: int | None = None) -> Any:
        xp = array_namespace(z)
        return xp.matmul(z, self.params["B"].T) + self.params["b"]

    def observe_vjp(self, z: Any, e: Any) -> tuple[Any, Params]:
        xp = array_namespace(z, e)
        G = xp.matmul(e, self.params["B"])
        ef, zf = _rows(e), _rows(z)
        return G, Params(B=xp.matmul(ef.T, zf), b=xp.sum(ef, axis=0))

    def forcing_signal(self, x: Any, latent: int | None = None) -> Any:
        xp = array_namespace(x)
        return xp.matmul(x - self.params["b"], self.pinv().T)

    def forcing_vjp(self, x: Any, zhat_bar: Any) -> Params:
        xp = array_namespace(x, zhat_bar)
        B, b = self.params["B"], self.params["b"]
        if not self.differentiate_forcing:
            return Params(B=xp.zeros_like(B), b=xp.zeros_like(b))
        P = self.pinv()
        zb, r = _rows(zhat_bar), _rows(x - b)
        Pbar = xp.matmul(zb.T, r)  # (M, N)
        N, M = B.shape
        I_N, I_M = xp.eye(N, dtype=B.dtype), xp.eye(M, dtype=B.dtype)
        PPt = xp.matmul(P, P.T)
        PtP = xp.matmul(P.T, P)
        B_bar = (
            -xp.matmul(xp.matmul(P.T, Pbar), P.T)
            + xp.matmul(xp.matmul(I_N - xp.matmul(B, P), Pbar.T), PPt)
            + xp.matmul(xp.matmul(PtP, Pbar.T), I_M - xp.matmul(P, B))
        )
        return Params(B=B_bar, b=-xp.matmul(xp.sum(zb, axis=0), P))

    def penalty(self, weight: float) -> tuple[float, Params]:
        xp = array_namespace(self.params["B"])
        B, b = self.params["B"], self.params["b"]
        if weight == 0 or min(B.shape) < 2:  # one singular value: r = 1, R_o = 0
            return 0.0, Params(B=xp.zeros_like(B), b=xp.zeros_like(b))
        U, s, Vh = xp.linalg.svd(B, full_matrices=False)
        smax, smin = s[0], s[-1]
        r = smin / smax
        value = float(weight * (1 - r) ** 2)
        dr = (xp.outer(U[:, -1], Vh[-1]) - r * xp.outer(U[:, 0], Vh[0])) / smax
        return value, Params(B=-2 * weight * (1 - r) * dr, b=xp.zeros_like(b))


class ObservedModel(Model):
    """A latent model with an observation model, trained together.

    The recurrence, its Jacobians and every VJP are the latent model's; ``params`` are the
    latent model's followed by the observation model's with the prefix ``obs.`` (e.g.
    ``obs.B``, ``obs.b``), so optimisers, ``fit`` and checkpoints handle both. ``vjp_params``
    and ``bptt`` give the observation parameters zero cotangent (they do not enter the
    recurrence; :func:`~pitsolve.training.losses.loss_and_grad` adds their gradient).

    Parameters
    ----------
    model
        the latent model (e.g. :class:`~pitsolve.models.ShPLRNN`).
    observation
        :class:`Identity` or :class:`Affine`.
    """

    def __init__(self, model: Model, observation: ObservationModel):
        if isinstance(model, ObservedModel):
            raise TypeError("model is already an ObservedModel")
        if not isinstance(observation, ObservationModel):
            raise TypeError(
                "observation must be an observation model such as Identity() or Affine(...), "
                f"got {type(observation).__name__}"
            )
        obs = {PREFIX + k: v for k, v in observation.params.items()}
        clash = set(obs) & set(model.params)
        if clash:
            raise ValueError(f"parameter names {sorted(clash)} clash with the observation's")
        super().__init__(Params({**model.params, **obs}), state_dim=model.state_dim,
                         input_dim=model.input_dim)
        self.latent, self.observation = model, observation
        self.jacobian_structure = model.jacobian_structure

    def __repr__(self) -> str:
        return f"ObservedModel({self.latent!r}, {self.observation!r})"

    def replace(self, params: Params | None = None, **arrays: Any) -> ObservedModel:
        if params is not None and list(params) != list(self.params):
            raise ValueError(f"params must have the names {list(self.params)}")
        merged: Mapping[str, Any] = {**(self.params if params is None else params), **arrays}
        unknown = sorted(set(arrays) - set(self.params))
        if unknown:
            raise TypeError(
                f"unknown parameter(s) {unknown}; the parameters are {list(self.params)}"
            )
        latent = {k: merged[k] for k in self.latent.params}
        obs = {k: merged[PREFIX + k] for k in self.observation.params}
        return ObservedModel(self.latent.replace(Params(latent)),
                             self.observation.replace(Params(obs)) if obs else self.observation)

    def astype(self, dtype: Any) -> ObservedModel:
        return ObservedModel(self.latent.astype(dtype), self.observation.astype(dtype))

    def on(self, backend: Any) -> ObservedModel:
        """The latent model on ``backend`` (see :meth:`Model.on`), the observation model's
        parameters on its device."""
        latent = self.latent.on(backend)
        return ObservedModel(latent, self.observation.to(latent.backend.xp))

    def to(self, xp: Any) -> ObservedModel:
        return ObservedModel(self.latent.to(xp), self.observation.to(xp))

    @property
    def backend(self) -> Any:
        return self.latent.backend

    def _backend_for(self, *arrays: Any) -> Any:
        return self.latent._backend_for(*arrays)

    def config(self) -> dict[str, Any]:
        """The latent model's and the observation model's configurations."""
        return {"latent": {"model": type(self.latent).__name__, **self.latent.config()},
                "observation": {"model": type(self.observation).__name__,
                                **self.observation.config()}}

    def regularization_target(self) -> Params:
        """The latent model's target, and zero for the observation's parameters."""
        return self.with_latent_params(self.latent.regularization_target())

    def observe(self, z: Any, observed: int | None = None) -> Any:
        """:math:`\\hat x = O(z)` (``observed`` = N is needed by :class:`Identity` only)."""
        if observed is None and isinstance(self.observation, Identity):
            raise ValueError("observe with an Identity observation model needs observed=N")
        return self.observation.observe(z, observed)

    def with_latent_params(self, latent_bar: Params, obs_bar: Params | None = None) -> Params:
        """Cotangents of all parameters from the latent ones (and the observation's, zero
        when None)."""
        xp = array_namespace(*latent_bar.values()) if len(latent_bar) else np
        if obs_bar is None:
            obs_bar = self.observation.params.map(lambda v: xp.zeros(v.shape, dtype=v.dtype))
        return Params({**latent_bar, **{PREFIX + k: v for k, v in obs_bar.items()}})

    # -- the latent model's recurrence --------------------------------------------------------
    def f(self, h: Any, x: Any = None) -> Any:
        return self.latent.f(h, x)

    def jacobian(self, h: Any, x: Any = None) -> Any:
        return self.latent.jacobian(h, x)

    def f_and_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        return self.latent.f_and_jacobian(h, x)

    def diagonal_jacobian(self, h: Any, x: Any = None) -> Any:
        return self.latent.diagonal_jacobian(h, x)

    def f_and_diagonal_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        return self.latent.f_and_diagonal_jacobian(h, x)

    def jvp(self, h: Any, x: Any, v: Any) -> Any:
        return self.latent.jvp(h, x, v)

    def vjp_h(self, h: Any, x: Any, u: Any) -> Any:
        return self.latent.vjp_h(h, x, u)

    def vjp_params(self, h: Any, x: Any, u: Any) -> Params:
        return self.with_latent_params(self.latent.vjp_params(h, x, u))

    def vjp_inputs(self, h: Any, x: Any, u: Any) -> Any:
        return self.latent.vjp_inputs(h, x, u)

    def sequential(self, h0: Any, inputs: Any, T: int) -> Any:
        return self.latent.sequential(h0, inputs, T)

    def bptt(self, h0: Any, inputs: Any, states: Any, g: Any) -> tuple[Params, Any, Any]:
        params_bar, h0_bar, inputs_bar = self.latent.bptt(h0, inputs, states, g)
        return self.with_latent_params(params_bar), h0_bar, inputs_bar


def split_observed(model: Model) -> tuple[Model, ObservationModel]:
    """``(latent model, observation model)``: an :class:`ObservedModel`'s parts, or the
    model itself with :class:`Identity`."""
    if isinstance(model, ObservedModel):
        return model.latent, model.observation
    return model, Identity()
