r"""The teacher-forced recurrence of a model, as a model in its own right.

With a forcing signal :math:`\hat z_t` and per-unit, per-step weights :math:`a_t \in [0, 1]`
(MATH.md §6) the forced recurrence

.. math::

    \tilde z_t = (1 - a_t) \odot F(\tilde z_{t-1}, x_t) + a_t \odot \hat z_t

is a recurrence with inputs :math:`(x_t, \hat z_t, a_t)`: :class:`ForcedModel`. Its Jacobian
is :math:`\operatorname{diag}(1 - a_t) J`, so every solver (Sequential = GTF-BPTT, DEER =
GTF-DEER, quasi-DEER, Newton–Krylov) solves and differentiates it, and for
α ≥ 1 − 1/σ_max its scan matrices are contracting. :class:`ForcedPredictionModel` writes the
same recurrence in the model's predictions :math:`z_t = F(\tilde z_{t-1})`, the form a
teacher-forced loss differentiates. The schedules of :math:`a_t` (GTF, aGTF, STF) are
training's (:mod:`pitsolve.training.forcing`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._arrays import array_namespace
from ..backends import for_arrays, get_backend
from ._loops import cotangent_like, run_loop, run_loop_bptt, sum_to
from .base import Model, Params, step_loop

__all__ = ["ForcedModel", "ForcedPredictionModel"]


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

    def on(self, backend: Any) -> Any:
        """The forced recurrence of the wrapped model on ``backend`` (see :meth:`Model.on`)."""
        return type(self)(get_backend(backend).bind(self.base))

    @property
    def backend(self) -> Any:
        return getattr(self.base, "backend", None)

    def _backend_for(self, *arrays: Any) -> Any:
        base = getattr(self.base, "_backend_for", None)  # (a duck-typed model has none)
        return for_arrays(*arrays) if base is None else base(*arrays)

    def regularization_target(self) -> Params:
        return self.base.regularization_target()

    def _split(self, x: Any) -> tuple[Any, Any, Any]:
        n = self.base.input_dim
        D = self.state_dim
        xb = x[..., :n] if n else None
        return xb, x[..., n : n + D], x[..., n + D :]


class ForcedModel(_Forcing):
    r"""The teacher-forced recurrence of a model as a model in its own right.

    :math:`\tilde z_t = (1 - a_t) \odot F(\tilde z_{t-1}, x_t) + a_t \odot \hat z_t`, with the
    inputs of step t laid out as ``[x_t (N_x), ẑ_t (D), a_t (D)]``. Derivatives follow from
    those of the wrapped model: :math:`\tilde J = \operatorname{diag}(1 - a) J`,
    :math:`\bar\theta = \bar\theta_F((1-a)\odot u)`,
    :math:`\bar{\hat z} = a \odot u`, :math:`\bar a = (\hat z - F) \odot u`.
    Its parameters are the wrapped model's.

    ``sequential`` and ``bptt`` (GTF-BPTT) run the wrapped model's compiled loops with the
    forcing (the built-in shPLRNNs, ALRNN, Elman and GRU have them) on the Numba backend,
    and the generic loops of :class:`Model` otherwise.
    """

    def sequential(self, h0: Any, inputs: Any, T: int) -> Any:
        """The forced trajectory ``(..., T, D)``: the wrapped model's compiled loop with the
        forcing where it runs, else the generic step loop."""
        out = None
        if inputs is not None and inputs.ndim >= 2:
            xb, zhat, a = self._split(inputs)
            out = run_loop(self.base, h0, xb, T, zhat, a)
        return step_loop(self, h0, inputs, T) if out is None else out

    def bptt(self, h0: Any, inputs: Any, states: Any, g: Any) -> tuple[Params, Any, Any]:
        """Backpropagation through time of the forced recurrence (see :meth:`Model.bptt`):
        the wrapped model's compiled backward loop with the forcing where it runs, else the
        generic loop."""
        out = None
        if inputs is not None and inputs.ndim >= 2:
            xb, zhat, a = self._split(inputs)
            out = run_loop_bptt(self.base, h0, xb, states, g, zhat, a)
        if out is None:
            return super().bptt(h0, inputs, states, g)
        params_bar, h0_bar, xb_bar, zhat_bar, a_bar = out
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
    forced recurrence on the Numba backend (the shPLRNNs and the ALRNN compute the
    predictions and their adjoint in one pass each, ``_loop_predictions`` and
    ``_loop_bptt_predictions``; Elman and GRU through their forced loops and one VJP of each
    kind), and the generic loops of :class:`Model` otherwise.
    """

    def _forced(self, h: Any, x: Any) -> tuple[Any, Any, Any, Any]:
        """``(x_base, ž, ẑ, a)``: ``ž = (1 - a) h + a ẑ``."""
        xb, zhat, a = self._split(x)
        return xb, (1 - a) * h + a * zhat, zhat, a

    def _fused(self, h: Any, x: Any, jac: str) -> Any:
        """The base model's one-pass forced evaluation (``_forced_eval``: the shPLRNNs on the
        Numba backend), or None."""
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

    # -- compiled loops ----------------------------------------------------------------------
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

    def _one_pass(self, hook: str, dtype: Any, *arrays: Any) -> Any:
        """The wrapped model's one-pass prediction loop ``hook`` where it runs (compiled
        backend, no inputs, float32/float64), else None."""
        fn = getattr(self.base, hook, None)
        if fn is None or self.base.input_dim or np.dtype(dtype) not in (np.float32, np.float64):
            return None
        return fn if self._backend_for(*arrays).compiled else None

    def sequential(self, h0: Any, inputs: Any, T: int) -> Any:
        """The predictions ``(..., T, D)``: the wrapped model's compiled one-pass loop
        (``_loop_predictions``) or its forced loop and one batched f where they run, else the
        generic step loop."""
        T = int(T)
        if inputs is None or inputs.ndim < 2 or T < 1:
            return step_loop(self, h0, inputs, T)
        fast = self._one_pass("_loop_predictions", h0.dtype, h0, inputs)
        if fast is None and not self._backend_for(h0, inputs).compiled:
            return step_loop(self, h0, inputs, T)
        lead, xb, _, _, u0, Zs, As = self._unpack(h0, inputs, T)
        D = self.state_dim
        if fast is not None:
            flat = [np.ascontiguousarray(v, dtype=h0.dtype).reshape(-1, *v.shape[-2:])
                    for v in (Zs, As)]
            out = fast(np.ascontiguousarray(u0, dtype=h0.dtype).reshape(-1, D), *flat)
            return out.reshape(*lead, T, D)
        states = run_loop(self.base, u0, xb, T, Zs, As)  # ž_1..ž_T, the last unforced: z_T
        if states is None:
            return step_loop(self, h0, inputs, T)
        prev = np.concatenate([u0[..., None, :], states[..., :-1, :]], axis=-2)
        return self.base.f(prev, xb)

    def bptt(self, h0: Any, inputs: Any, states: Any, g: Any) -> tuple[Params, Any, Any]:
        """Backpropagation through time (see :meth:`Model.bptt`) of the predictions'
        recurrence: the wrapped model's compiled ``_loop_bptt_predictions`` (one backward
        pass), or its forced backward loop plus one VJP of each kind, where they run; else
        the generic loop."""
        T = states.shape[-2]
        if inputs is None or inputs.ndim < 2 or inputs.shape[-2] < T:
            return super().bptt(h0, inputs, states, g)
        fast = self._one_pass("_loop_bptt_predictions", states.dtype, h0, inputs, states, g)
        if fast is None and (getattr(self.base, "_loop_bptt", None) is None
                             or not self._backend_for(h0, inputs, states, g).compiled):
            return super().bptt(h0, inputs, states, g)
        # a diverging model overflows here as in the compiled loops: no warnings, inf/NaN out
        with np.errstate(over="ignore", invalid="ignore"):
            out = self._bptt_compiled(h0, inputs, states, g, fast)
        return super().bptt(h0, inputs, states, g) if out is None else out

    def _bptt_compiled(
        self, h0: Any, inputs: Any, states: Any, g: Any, fast: Any
    ) -> tuple[Params, Any, Any] | None:
        """:meth:`bptt` by the compiled loops: ``fast`` (``_loop_bptt_predictions``) or, if
        None, the wrapped model's forced backward loop; None if that does not run."""
        T = states.shape[-2]
        lead, xb, zhat, a, u0, Zs, As = self._unpack(h0, inputs, T)
        D = self.state_dim
        states = np.broadcast_to(states, (*lead, T, D))
        g = np.broadcast_to(g, (*lead, T, D))
        U = (1 - As) * states + As * Zs  # ž_1..ž_{T-1}, then z_T (never a previous state)
        x_bar = None
        if fast is not None:
            dt = states.dtype
            H0 = np.ascontiguousarray(u0.reshape(-1, D), dtype=dt)
            S, G, A = (np.ascontiguousarray(v, dtype=dt).reshape(-1, T, D) for v in (U, g, As))
            params_bar, u0_bar, lam = fast(H0, S, G, A)
            u0_bar, lam = u0_bar.reshape(*lead, D), lam.reshape(*lead, T, D)[..., :-1, :]
            # ∂L/∂ž_r = λ_r for the forcing rows r = 1..T-1
            rows = [a[..., 1:, :] * lam, (zhat[..., 1:, :] - states[..., :-1, :]) * lam]
        else:
            # ž's recurrence (the forced backward loop) with the cotangents
            # g'_t = J(ž_t)ᵀ g_{t+1} of the states, plus the terms of z_{t+1} = F(ž_t) at
            # every ž_t directly
            prev = np.concatenate([u0[..., None, :], U[..., :-1, :]], axis=-2)
            g_states = np.zeros_like(U)
            x_next = None if xb is None else xb[..., 1:, :]
            g_states[..., :-1, :] = self.base.vjp_h(U[..., :-1, :], x_next, g[..., 1:, :])
            forced = run_loop_bptt(self.base, u0, xb, U, g_states, Zs, As)
            if forced is None:
                return None
            pb, u0_bar, x_bar, zb, ab = forced
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
        inputs_bar = cotangent_like(np, np.concatenate(parts, axis=-1), inputs)
        h0_bar = sum_to((1 - a[..., 0, :]) * u0_bar, h0.shape)
        return params_bar, h0_bar, inputs_bar
