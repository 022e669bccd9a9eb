r"""Forcing schedules: Generalized Teacher Forcing (GTF, aGTF), sparse teacher forcing (STF)
and no forcing.

With an identity observation model (N ≤ M latent units observed) the data give a forcing
signal :math:`\hat z_t = [x_t; 0]`, and the forced recurrence is (MATH.md §6)

.. math::

    z_t = F_\theta(\tilde z_{t-1}),\qquad
    \tilde z_t = (1 - a_t) \odot z_t + a_t \odot \hat z_t,\qquad
    L = \tfrac1{T N}\sum_t \|z_t[:N] - x_t\|^2 ,

with per-unit, per-step forcing weights :math:`a_t`: α on the forced units (GTF; partial
forcing forces only the N observed units), 1 every τ steps (STF), 0 (no forcing). This module
holds the schedules of :math:`a_t` and the aGTF estimate of α; the forced recurrence itself is
a model, :class:`~pitsolve.models.ForcedModel` (its Jacobian is
:math:`\operatorname{diag}(1 - a_t) J`: every solver solves and differentiates it, and for
α ≥ 1 − 1/σ_max the scan matrices are contracting, GTF-DEER).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .._arrays import array_namespace
from .._deprecation import moved
from ..kernels.norms import spectral_norms
from ..models import Identity, Model
from ..parallel.slices import TimeSlices

__all__ = [
    "GTF",
    "STF",
    "NoForcing",
    "estimate_alpha",
    "forcing_signal",
]


_ESTIMATORS = ("product", "mean", "max", "shplrnn-bound")

# ForcedModel and ForcedPredictionModel moved to pitsolve.models (for one release here too)
__getattr__ = moved(__name__, "pitsolve.models", ("ForcedModel", "ForcedPredictionModel"))


def forcing_signal(data: Any, latent: int) -> Any:
    """ẑ = [x; 0]: the identity observation model inverted (N ≤ M observed units; see
    :class:`~pitsolve.models.Identity`)."""
    return Identity().forcing_signal(data, latent)


@dataclasses.dataclass(frozen=True, kw_only=True)
class NoForcing:
    """Free running: :math:`a_t = 0` (the loss is on the model's own trajectory)."""

    def weights(self, T: int, latent: int, observed: int, alpha: float,
                start: int = 0) -> Any:
        """:math:`a_t` ``(T, latent)`` for the steps ``start .. start + T - 1``."""
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

    def weights(self, T: int, latent: int, observed: int, alpha: float,
                start: int = 0) -> Any:
        """:math:`a_t` ``(T, latent)`` for the steps ``start .. start + T - 1``: α on the
        forced units."""
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

    def weights(self, T: int, latent: int, observed: int, alpha: float,
                start: int = 0) -> Any:
        """:math:`a_t` ``(T, latent)`` for the steps ``start .. start + T - 1``: 1 on the
        forced units at every ``interval``-th step (t = interval - 1, 2 interval - 1, ...)."""
        a = np.zeros((T, latent))
        first = (self.interval - 1 - start) % self.interval
        a[first :: self.interval, : observed if self.partial else latent] = 1.0
        return a


def _spectral_norms(J: Any) -> Any:
    if isinstance(J, np.ndarray):  # the compiled Jacobi kernel (LAPACK beyond 6 × 6)
        return spectral_norms(J)
    return array_namespace(J).linalg.norm(J, ord=2, axis=(-2, -1))


def estimate_alpha(model: Model, zhat: Any, forcing: GTF, alpha: float,
                   slices: TimeSlices | None = None) -> float:
    r"""One aGTF update of α from the Jacobians at the data-inferred states ``zhat``
    ``(..., T, M)`` (leading axes: sequences). With ``slices`` (a series split by time over
    MPI ranks, ``zhat`` this rank's slice) the means and maxima over time are over the whole
    series, the same α on every rank."""
    slices = TimeSlices() if slices is None else slices
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
        steps = slices.sum(Js.shape[-3])
        if forcing.estimator == "product":
            logs = xp.log(xp.maximum(_spectral_norms(Js), 1e-300))
            kappa = float(xp.exp(slices.sum(logs.sum(axis=-1)) / steps).max())
        elif forcing.estimator == "mean":
            kappa = float(_spectral_norms(slices.sum(Js.sum(axis=-3)) / steps).max())
        else:
            kappa = float(slices.max(np.asarray(float(_spectral_norms(Js).max()))))
    alpha_hat = max(0.0, 1.0 - 1.0 / kappa) if kappa > 0 else 0.0
    if alpha_hat > alpha:
        return alpha_hat
    return forcing.decay * alpha + (1.0 - forcing.decay) * alpha_hat
