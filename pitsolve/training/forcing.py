r"""Generalized Teacher Forcing (GTF, aGTF), sparse teacher forcing (STF) and no forcing.

With an identity observation model (N ≤ M latent units observed) the data give a forcing
signal :math:`\hat z_t = [x_t; 0]`, and the forced recurrence is (MATH.md §6)

.. math::

    z_t = F_\theta(\tilde z_{t-1}),\qquad
    \tilde z_t = (1 - a_t) \odot z_t + a_t \odot \hat z_t,\qquad
    L = \tfrac1{T N}\sum_t \|z_t[:N] - x_t\|^2 ,

with per-unit, per-step forcing weights :math:`a_t`: α on the forced units (GTF; partial
forcing forces only the N observed units), 1 every τ steps (STF), 0 (no forcing). The forced
recurrence in :math:`\tilde z` is itself a recurrence with inputs :math:`(x_t, \hat z_t, a_t)`,
:class:`ForcedModel`, whose Jacobian is :math:`\operatorname{diag}(1 - a_t) J`: every solver
(Sequential = GTF-BPTT, DEER = GTF-DEER, quasi-DEER, Newton–Krylov) solves and differentiates
it, and for α ≥ 1 − 1/σ_max the scan matrices are contracting (GTF-DEER).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from ..backends import array_namespace
from ..models.base import Model, Params

__all__ = ["GTF", "STF", "ForcedModel", "NoForcing", "estimate_alpha", "forcing_signal"]

_ESTIMATORS = ("product", "mean", "max", "shplrnn-bound")


class ForcedModel(Model):
    r"""The teacher-forced recurrence of a model as a model in its own right.

    :math:`\tilde z_t = (1 - a_t) \odot F(\tilde z_{t-1}, x_t) + a_t \odot \hat z_t`, with the
    inputs of step t laid out as ``[x_t (N_x), ẑ_t (D), a_t (D)]``. Derivatives follow from
    those of the wrapped model: :math:`\tilde J = \operatorname{diag}(1 - a) J`,
    :math:`\bar\theta = \bar\theta_F((1-a)\odot u)`,
    :math:`\bar{\hat z} = a \odot u`, :math:`\bar a = (\hat z - F) \odot u`.
    Its parameters are the wrapped model's.

    ``sequential`` and ``bptt`` (GTF-BPTT) run the wrapped model's compiled forced loops
    (``sequential_forced``, ``bptt_forced``, which the built-in shPLRNNs, ALRNN, Elman and GRU
    provide) on NumPy arrays, and the generic loops of :class:`Model` otherwise.
    """

    def __init__(self, model: Model):
        super().__init__(model.params, state_dim=model.state_dim,
                         input_dim=model.input_dim + 2 * model.state_dim)
        self.base = model
        self.jacobian_structure = model.jacobian_structure

    def replace(self, params: Params | None = None, **arrays: Any) -> ForcedModel:
        return ForcedModel(self.base.replace(params, **arrays))

    def astype(self, dtype: Any) -> ForcedModel:
        return ForcedModel(self.base.astype(dtype))

    def _split(self, x: Any) -> tuple[Any, Any, Any]:
        n = self.base.input_dim
        D = self.state_dim
        xb = x[..., :n] if n else None
        return xb, x[..., n : n + D], x[..., n + D :]

    def _compiled(self, method: str, *arrays: Any) -> Any:
        """The base model's ``method`` if it has one and ``arrays`` are NumPy, else None."""
        fn = getattr(self.base, method, None)
        if fn is None or not all(isinstance(a, np.ndarray) for a in arrays):
            return None
        return fn

    def sequential(self, h0: Any, inputs: Any, T: int) -> Any:
        """The forced trajectory ``(..., T, D)``: the base model's compiled
        ``sequential_forced`` on NumPy arrays, else the generic step loop."""
        from ..models.base import step_loop

        fn = self._compiled("sequential_forced", h0, inputs)
        if fn is None or inputs.ndim < 2:
            return step_loop(self, h0, inputs, T)
        xb, zhat, a = self._split(inputs)
        return fn(h0, xb, zhat, a, T)

    def bptt(self, h0: Any, inputs: Any, states: Any, g: Any) -> tuple[Params, Any, Any]:
        """Backpropagation through time of the forced recurrence (see :meth:`Model.bptt`):
        the base model's compiled ``bptt_forced`` on NumPy arrays, else the generic loop."""
        fn = self._compiled("bptt_forced", h0, inputs, states, g)
        if fn is None or inputs.ndim < 2:
            return super().bptt(h0, inputs, states, g)
        xb, zhat, a = self._split(inputs)
        params_bar, h0_bar, xb_bar, zhat_bar, a_bar = fn(h0, xb, zhat, a, states, g)
        parts = [zhat_bar, a_bar] if xb is None else [xb_bar, zhat_bar, a_bar]
        return params_bar, h0_bar, np.concatenate(parts, axis=-1)

    def f(self, h: Any, x: Any = None) -> Any:
        xb, zhat, a = self._split(x)
        return (1 - a) * self.base.f(h, xb) + a * zhat

    def jacobian(self, h: Any, x: Any = None) -> Any:
        xb, _, a = self._split(x)
        J = self.base.jacobian(h, xb)
        return (1 - a) * J if self.jacobian_structure == "diagonal" else (1 - a)[..., None] * J

    def f_and_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        xb, zhat, a = self._split(x)
        f, J = self.base.f_and_jacobian(h, xb)
        J = (1 - a) * J if self.jacobian_structure == "diagonal" else (1 - a)[..., None] * J
        return (1 - a) * f + a * zhat, J

    def diagonal_jacobian(self, h: Any, x: Any = None) -> Any:
        xb, _, a = self._split(x)
        return (1 - a) * self.base.diagonal_jacobian(h, xb)

    def f_and_diagonal_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        xb, zhat, a = self._split(x)
        f, d = self.base.f_and_diagonal_jacobian(h, xb)
        return (1 - a) * f + a * zhat, (1 - a) * d

    def jvp(self, h: Any, x: Any, v: Any) -> Any:
        xb, _, a = self._split(x)
        return (1 - a) * self.base.jvp(h, xb, v)

    def vjp_h(self, h: Any, x: Any, u: Any) -> Any:
        xb, _, a = self._split(x)
        return self.base.vjp_h(h, xb, (1 - a) * u)

    def vjp_params(self, h: Any, x: Any, u: Any) -> Params:
        xb, _, a = self._split(x)
        return self.base.vjp_params(h, xb, (1 - a) * u)

    def vjp_inputs(self, h: Any, x: Any, u: Any) -> Any:
        xp = array_namespace(h, u)
        xb, zhat, a = self._split(x)
        parts = []
        if self.base.input_dim:
            parts.append(self.base.vjp_inputs(h, xb, (1 - a) * u))
        parts += [a * u, (zhat - self.base.f(h, xb)) * u]
        lead = np.broadcast_shapes(*[p.shape[:-1] for p in parts])  # last axes differ
        return xp.concatenate([xp.broadcast_to(p, (*lead, p.shape[-1])) for p in parts], axis=-1)


def forcing_signal(data: Any, latent: int) -> Any:
    """ẑ = [x; 0]: the identity observation model inverted (N ≤ M observed units)."""
    xp = array_namespace(data)
    N = data.shape[-1]
    if N > latent:
        raise ValueError(
            f"data has N={N} observed dimensions but the model has only {latent} latent units; "
            "identity forcing needs N ≤ M (use a larger latent size)"
        )
    pad = xp.zeros((*data.shape[:-1], latent - N), dtype=data.dtype)
    return xp.concatenate([data, pad], axis=-1)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NoForcing:
    """Free running: :math:`a_t = 0` (the loss is on the model's own trajectory)."""

    def weights(self, T: int, latent: int, observed: int, alpha: float) -> Any:
        return np.zeros((T, latent))

    @property
    def adaptive(self) -> bool:
        return False


@dataclasses.dataclass(frozen=True, kw_only=True)
class GTF:
    r"""Generalized teacher forcing with weight α on the forced units.

    Parameters
    ----------
    alpha
        a number in [0, 1], or ``"adaptive"`` (aGTF): every ``update_every`` optimiser steps
        :math:`\hat\alpha = \max(0, 1 - 1/\kappa)` from a Jacobian-growth estimate κ at the
        data-inferred states, and α ← α̂ if α̂ > α else γα + (1 − γ)α̂ (γ = ``decay``; α
        starts at 1).
    estimator
        κ for aGTF: ``"product"`` (max over sequences of the geometric mean over t of
        ‖J(ẑ_t)‖₂, default), ``"mean"`` (‖mean_t J‖₂), ``"max"`` (max over t and sequences of
        ‖J‖₂), ``"shplrnn-bound"`` (data-free: max|a| + ‖W1‖₂‖W2‖₂).
    partial
        force only the N observed units (True, default) or all M units with ẑ = [x; 0].
    """

    alpha: float | str = 0.2
    estimator: str = "product"
    update_every: int = 5
    decay: float = 0.999
    partial: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.alpha, str):
            if self.alpha != "adaptive":
                raise ValueError(
                    f"alpha must be a number in [0, 1] or 'adaptive', got {self.alpha!r}"
                )
        elif not 0.0 <= float(self.alpha) <= 1.0:
            raise ValueError(f"alpha must lie in [0, 1], got {self.alpha}")
        if self.estimator not in _ESTIMATORS:
            raise ValueError(f"estimator must be one of {_ESTIMATORS}, got {self.estimator!r}")
        if self.update_every < 1:
            raise ValueError(f"update_every must be ≥ 1, got {self.update_every}")
        if not 0.0 <= self.decay < 1.0:
            raise ValueError(f"decay must lie in [0, 1), got {self.decay}")

    @property
    def adaptive(self) -> bool:
        return self.alpha == "adaptive"

    @property
    def initial_alpha(self) -> float:
        return 1.0 if self.adaptive else float(self.alpha)

    def weights(self, T: int, latent: int, observed: int, alpha: float) -> Any:
        a = np.zeros((T, latent))
        a[:, : observed if self.partial else latent] = alpha
        return a


@dataclasses.dataclass(frozen=True, kw_only=True)
class STF:
    """Sparse teacher forcing: the forced units are replaced by data every ``interval`` steps."""

    interval: int = 16
    partial: bool = True

    def __post_init__(self) -> None:
        if self.interval < 1:
            raise ValueError(f"interval must be ≥ 1, got {self.interval}")

    @property
    def adaptive(self) -> bool:
        return False

    def weights(self, T: int, latent: int, observed: int, alpha: float) -> Any:
        a = np.zeros((T, latent))
        a[self.interval - 1 :: self.interval, : observed if self.partial else latent] = 1.0
        return a


def _spectral_norms(J: Any) -> Any:
    xp = array_namespace(J)
    return xp.linalg.norm(J, ord=2, axis=(-2, -1))


def estimate_alpha(model: Model, zhat: Any, forcing: GTF, alpha: float) -> float:
    r"""One aGTF update of α from the Jacobians at the data-inferred states ``zhat``
    ``(..., T, M)`` (leading axes: sequences)."""
    xp = array_namespace(zhat)
    if forcing.estimator == "shplrnn-bound":
        p = model.params
        if not {"a", "W1", "W2"} <= set(p):
            raise ValueError("estimator='shplrnn-bound' needs a shPLRNN (parameters a, W1, W2)")
        norm = xp.linalg.norm(p["W1"], 2) * xp.linalg.norm(p["W2"], 2)
        kappa = float(xp.abs(p["a"]).max() + norm)
    else:
        J = model.jacobian(zhat)
        if model.jacobian_structure == "diagonal":
            J = J[..., :, None] * xp.eye(J.shape[-1], dtype=J.dtype)
        Js = J.reshape(-1, *J.shape[-3:])  # (sequences, T, M, M)
        if forcing.estimator == "product":
            logs = xp.log(xp.maximum(_spectral_norms(Js), 1e-300))
            kappa = float(xp.exp(logs.mean(axis=-1)).max())
        elif forcing.estimator == "mean":
            kappa = float(_spectral_norms(Js.mean(axis=-3)).max())
        else:
            kappa = float(_spectral_norms(Js).max())
    alpha_hat = max(0.0, 1.0 - 1.0 / kappa) if kappa > 0 else 0.0
    if alpha_hat > alpha:
        return alpha_hat
    return forcing.decay * alpha + (1.0 - forcing.decay) * alpha_hat
