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

__all__ = [
    "GTF",
    "STF",
    "ForcedModel",
    "ForcedPredictionModel",
    "NoForcing",
    "estimate_alpha",
    "forcing_signal",
]

_ESTIMATORS = ("product", "mean", "max", "shplrnn-bound")


class _Forcing(Model):
    """What the two forms of the forced recurrence share: the wrapped model (``base``, whose
    parameters they have) and inputs laid out as ``[x (N_x), ẑ (D), a (D)]``."""

    def __init__(self, model: Model):
        super().__init__(model.params, state_dim=model.state_dim,
                         input_dim=model.input_dim + 2 * model.state_dim)
        self.base = model
        self.jacobian_structure = model.jacobian_structure

    def replace(self, params: Params | None = None, **arrays: Any) -> Any:
        return type(self)(self.base.replace(params, **arrays))

    def astype(self, dtype: Any) -> Any:
        return type(self)(self.base.astype(dtype))

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


class ForcedModel(_Forcing):
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


class ForcedPredictionModel(_Forcing):
    r"""The teacher-forced recurrence written in the model's predictions: the form the loss
    differentiates.

    .. math::

        z_t = F(\check z_{t-1}, x_t),\qquad
        \check z_{t-1} = (1 - a_{t-1}) \odot z_{t-1} + a_{t-1} \odot \hat z_{t-1},

    with the inputs of step t laid out as ``[x_t (N_x), ẑ_{t-1} (D), a_{t-1} (D)]``: the
    forcing acts on the previous state. From :math:`z_0` with :math:`a_0 = 1`,
    :math:`\check z_t` is the forced trajectory :math:`\tilde z_t` of :class:`ForcedModel`
    and :math:`z_t` the predictions on which the loss is (MATH.md §6), so the loss is a
    function of the states alone: one adjoint (``sol.vjp``) is its whole gradient, and the
    Jacobians a DEER solve kept at the solution serve it. With :math:`w = J(\check z)^\top u`:

    .. math::

        \check J = J(\check z) \operatorname{diag}(1 - a),\quad
        \bar\theta = \bar\theta_F(\check z; u),\quad \bar h = (1 - a) \odot w,\quad
        \bar{\hat z} = a \odot w,\quad \bar a = (\hat z - h) \odot w .

    ``sequential`` and ``bptt`` (GTF-BPTT) run the wrapped model's compiled loops of the
    forced recurrence on NumPy arrays (the shPLRNNs and the ALRNN compute the predictions and
    their adjoint in one pass each; Elman and GRU through ``sequential_forced`` and
    ``bptt_forced``), and the generic loops of :class:`Model` otherwise.
    """

    def _forced(self, h: Any, x: Any) -> tuple[Any, Any, Any, Any]:
        """``(x_base, ž, ẑ, a)``: ``ž = (1 - a) h + a ẑ``."""
        xb, zhat, a = self._split(x)
        return xb, (1 - a) * h + a * zhat, zhat, a

    def _fused(self, h: Any, x: Any, jac: str) -> Any:
        """The base model's one-pass forced evaluation (``_forced_eval``: the shPLRNNs on
        NumPy arrays), or None."""
        fn = getattr(self.base, "_forced_eval", None)
        if fn is None or self.base.input_dim:
            return None
        _, zhat, a = self._split(x)
        return fn(h, zhat, a, jac)

    def f(self, h: Any, x: Any = None) -> Any:
        fused = self._fused(h, x, "")
        if fused is not None:
            return fused[0]
        xb, u, _, _ = self._forced(h, x)
        return self.base.f(u, xb)

    def _scale(self, J: Any, a: Any) -> Any:
        """:math:`J \\operatorname{diag}(1 - a)`: the columns of J (diagonal: elementwise)."""
        return J * (1 - a) if self.jacobian_structure == "diagonal" else J * (1 - a)[..., None, :]

    def jacobian(self, h: Any, x: Any = None) -> Any:
        return self.f_and_jacobian(h, x)[1]

    def f_and_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        fused = self._fused(h, x, "dense" if self.jacobian_structure == "dense" else "diag")
        if fused is not None:
            return fused
        xb, u, _, a = self._forced(h, x)
        f, J = self.base.f_and_jacobian(u, xb)
        return f, self._scale(J, a)

    def diagonal_jacobian(self, h: Any, x: Any = None) -> Any:
        return self.f_and_diagonal_jacobian(h, x)[1]

    def f_and_diagonal_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        fused = self._fused(h, x, "diag")
        if fused is not None:
            return fused
        xb, u, _, a = self._forced(h, x)
        f, d = self.base.f_and_diagonal_jacobian(u, xb)
        return f, (1 - a) * d

    def jvp(self, h: Any, x: Any, v: Any) -> Any:
        xb, u, _, a = self._forced(h, x)
        return self.base.jvp(u, xb, (1 - a) * v)

    def vjp_h(self, h: Any, x: Any, u: Any) -> Any:
        xb, z, _, a = self._forced(h, x)
        return (1 - a) * self.base.vjp_h(z, xb, u)

    def vjp_params(self, h: Any, x: Any, u: Any) -> Params:
        xb, z, _, _ = self._forced(h, x)
        return self.base.vjp_params(z, xb, u)

    def vjp_inputs(self, h: Any, x: Any, u: Any) -> Any:
        xp = array_namespace(h, u)
        xb, z, zhat, a = self._forced(h, x)
        w = self.base.vjp_h(z, xb, u)
        parts = [] if not self.base.input_dim else [self.base.vjp_inputs(z, xb, u)]
        parts += [a * w, (zhat - h) * w]
        lead = np.broadcast_shapes(*[p.shape[:-1] for p in parts])  # last axes differ
        return xp.concatenate([xp.broadcast_to(p, (*lead, p.shape[-1])) for p in parts], axis=-1)

    # -- compiled loops (NumPy) ----------------------------------------------------------------
    def _unpack(self, h0: Any, inputs: Any, T: int) -> tuple[Any, ...]:
        """``(lead, x_base, ẑ, a, ž_0, Ẑ', A')`` for T steps, broadcast to the batch shape
        ``lead``: ``Ẑ'``, ``A'`` are the forcing of steps 1..T-1 followed by zeros (the
        forcing of ``z_t`` is carried to step t+1), ``ž_0 = (1 - a_0) h_0 + a_0 ẑ_0``."""
        xp = array_namespace(h0, inputs)
        inputs = inputs[..., :T, :]
        lead = tuple(np.broadcast_shapes(h0.shape[:-1], inputs.shape[:-2]))
        inputs = xp.broadcast_to(inputs, (*lead, *inputs.shape[-2:]))
        h0 = xp.broadcast_to(h0, (*lead, h0.shape[-1]))
        xb, zhat, a = self._split(inputs)
        u0 = (1 - a[..., 0, :]) * h0 + a[..., 0, :] * zhat[..., 0, :]

        def shift(v: Any) -> Any:
            out = xp.zeros_like(v)
            out[..., :-1, :] = v[..., 1:, :]
            return out

        return lead, xb, zhat, a, u0, shift(zhat), shift(a)

    def sequential(self, h0: Any, inputs: Any, T: int) -> Any:
        """The predictions ``(..., T, D)``: the base model's compiled forced loop on NumPy
        arrays (``_sequential_predictions``, else ``sequential_forced`` and one batched f),
        else the generic step loop."""
        from ..models.base import step_loop

        T = int(T)
        fast = self._compiled("_sequential_predictions", h0, inputs)
        if self.base.input_dim or h0.dtype not in (np.float32, np.float64):
            fast = None
        forced = self._compiled("sequential_forced", h0, inputs)
        if (fast is None and forced is None) or inputs.ndim < 2 or T < 1:
            return step_loop(self, h0, inputs, T)
        lead, xb, _, _, u0, Zs, As = self._unpack(h0, inputs, T)
        if fast is not None:
            D = self.state_dim
            flat = [np.ascontiguousarray(v, dtype=h0.dtype).reshape(-1, *v.shape[-2:])
                    for v in (Zs, As)]
            out = fast(np.ascontiguousarray(u0, dtype=h0.dtype).reshape(-1, D), *flat)
            return out.reshape(*lead, T, D)
        states = forced(u0, xb, Zs, As, T)  # ž_1..ž_T, the last one unforced: z_T
        prev = np.concatenate([u0[..., None, :], states[..., :-1, :]], axis=-2)
        return self.base.f(prev, xb)

    def bptt(self, h0: Any, inputs: Any, states: Any, g: Any) -> tuple[Params, Any, Any]:
        """Backpropagation through time (see :meth:`Model.bptt`) of the predictions' recurrence:
        the base model's compiled ``_bptt_predictions`` (one backward pass), or its
        ``bptt_forced`` plus one VJP of each kind, on NumPy arrays; else the generic loop."""
        T = states.shape[-2]
        fast = self._compiled("_bptt_predictions", h0, inputs, states, g)
        if self.base.input_dim or states.dtype not in (np.float32, np.float64):
            fast = None
        forced = self._compiled("bptt_forced", h0, inputs, states, g)
        if (fast is None and forced is None) or inputs.ndim < 2 or inputs.shape[-2] < T:
            return super().bptt(h0, inputs, states, g)
        # a diverging model overflows here as in the compiled loops: no warnings, inf/NaN out
        with np.errstate(over="ignore", invalid="ignore"):
            return self._bptt_numpy(h0, inputs, states, g, fast, forced)

    def _bptt_numpy(
        self, h0: Any, inputs: Any, states: Any, g: Any, fast: Any, forced: Any
    ) -> tuple[Params, Any, Any]:
        """:meth:`bptt` on NumPy arrays: ``fast`` (``_bptt_predictions``) or ``forced``
        (``bptt_forced``) is the base model's compiled loop."""
        from ..models._shared import _bptt_arrays, _cotangent_like, _sum_to

        T = states.shape[-2]
        lead, xb, zhat, a, u0, Zs, As = self._unpack(h0, inputs, T)
        D = self.state_dim
        states = np.broadcast_to(states, (*lead, T, D))
        g = np.broadcast_to(g, (*lead, T, D))
        U = (1 - As) * states + As * Zs  # ž_1..ž_{T-1}, then z_T (never a previous state)
        flat = None if fast is None else _bptt_arrays(self.base, u0, xb, U, g)
        if flat is not None:
            H0, _, S, G, _ = flat
            A = np.ascontiguousarray(As, dtype=S.dtype).reshape(-1, T, D)
            params_bar, u0_bar, lam = fast(H0, S, G, A)
            u0_bar, lam = u0_bar.reshape(*lead, D), lam.reshape(*lead, T, D)[..., :-1, :]
            # ∂L/∂ž_r = λ_r for the forcing rows r = 1..T-1
            rows = [a[..., 1:, :] * lam, (zhat[..., 1:, :] - states[..., :-1, :]) * lam]
            x_bar = None
        else:
            # ž's recurrence (bptt_forced) with the cotangents g'_t = J(ž_t)ᵀ g_{t+1} of the
            # states, plus the terms of z_{t+1} = F(ž_t) at every ž_t directly
            prev = np.concatenate([u0[..., None, :], U[..., :-1, :]], axis=-2)
            g_states = np.zeros_like(U)
            x_next = None if xb is None else xb[..., 1:, :]
            g_states[..., :-1, :] = self.base.vjp_h(U[..., :-1, :], x_next, g[..., 1:, :])
            pb, u0_bar, x_bar, zb, ab = forced(u0, xb, Zs, As, U, g_states)
            params_bar = pb.map(lambda p, q: p + q, self.base.vjp_params(prev, xb, g))
            x0 = None if xb is None else xb[..., 0, :]
            u0_bar = u0_bar + self.base.vjp_h(u0, x0, g[..., 0, :])
            if xb is not None:
                x_bar = x_bar + self.base.vjp_inputs(prev, xb, g)
            rows = [zb[..., :-1, :], ab[..., :-1, :]]
        # row 0: ž_0 = (1 - a_0) h_0 + a_0 ẑ_0
        h0_full = np.broadcast_to(h0, (*lead, D))
        first = [a[..., :1, :] * u0_bar[..., None, :],
                 (zhat[..., :1, :] - h0_full[..., None, :]) * u0_bar[..., None, :]]
        parts = [np.concatenate([f, r], axis=-2) for f, r in zip(first, rows, strict=True)]
        if xb is not None:
            parts.insert(0, x_bar)
        inputs_bar = _cotangent_like(np, np.concatenate(parts, axis=-1), inputs)
        h0_bar = _sum_to((1 - a[..., 0, :]) * u0_bar, h0.shape)
        return params_bar, h0_bar, inputs_bar


def forcing_signal(data: Any, latent: int) -> Any:
    """ẑ = [x; 0]: the identity observation model inverted (N ≤ M observed units; see
    :class:`~pitsolve.training.observation.Identity`)."""
    from .observation import Identity

    return Identity().forcing_signal(data, latent)


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
