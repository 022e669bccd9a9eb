r"""The Elman network :math:`h_t = \tanh(W h_{t-1} + U x_t + b)`, with hand-derived
derivatives; written against the array namespace of the state, batched over any leading
axes, computing in the floating dtype of its array arguments (parameters cast once per dtype
and cached). Its loops over time are compiled on the Numba backend."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..._arrays import array_namespace
from ..._validation import check_positive_int
from .. import _rnn_numba
from .._loops import check_inputs
from .._shared import (
    _arrays,
    _check_dtype,
    _check_inputs_count,
    _compute_dtype,
    _derived,
    _given_params,
    _lead_sum,
    _outer_sum,
)
from ..base import Linearization, Model, Params

__all__ = ["Elman", "ElmanLinearization"]


class Elman(Model):
    r"""Elman network :math:`h_t = \tanh(W h_{t-1} + U x_t + b)`.

    Jacobian :math:`J = \operatorname{diag}(1 - h_t^2)\, W` (dense). The JVP
    :math:`(1-h_t^2) \odot (W v)` and VJP :math:`W^\top ((1-h_t^2) \odot u)` never form
    :math:`J`.

    Parameters
    ----------
    state : D, the number of hidden units.
    inputs : N_x, the input size (0 for an autonomous network; then ``U`` has shape ``(D, 0)``).
    seed : seed of ``numpy.random.default_rng`` for the initialisation.
    dtype : float32 or float64; default float64, or the dtype of ``params`` when given.
    params : optional mapping with exactly ``"W"`` ``(D, D)``, ``"U"`` ``(D, N_x)``, ``"b"``
        ``(D,)``; replaces the random initialisation.

    Notes
    -----
    Initialisation (in this order from one generator): :math:`W \sim \mathcal N(0, 0.9^2/D)`,
    whose spectral radius tends to 0.9 as D grows (circular law);
    :math:`U \sim \mathcal N(0, 1/N_x)`; :math:`b = 0`. ``Elman(256, 8, seed=0)`` is the
    ``elman_256`` benchmark model.
    """

    #: ``bptt`` recomputes each step's output from :math:`h_{t-1}` (False: reads it as
    #: :math:`h_t` from ``states``, exact on a trajectory; benchmarks switch it per instance).
    _bptt_recompute: bool = True

    def __init__(
        self,
        state: int,
        inputs: int = 0,
        *,
        seed: int | None = 0,
        dtype: Any = None,
        params: Mapping[str, Any] | None = None,
    ):
        D = check_positive_int(state, "state")
        N = _check_inputs_count(inputs)
        dt = _check_dtype(dtype)
        shapes = {"W": (D, D), "U": (D, N), "b": (D,)}
        if params is None:
            rng = np.random.default_rng(seed)
            arrays = {
                "W": rng.normal(0.0, 0.9 / np.sqrt(D), size=(D, D)),
                "U": rng.normal(0.0, 1.0 / np.sqrt(N), size=(D, N)) if N else np.zeros((D, 0)),
                "b": np.zeros(D),
            }
            arrays = {k: v.astype(np.float64 if dt is None else dt) for k, v in arrays.items()}
        else:
            arrays = _given_params("Elman", params, shapes, dt)
        super().__init__(Params(arrays), state_dim=D, input_dim=N)

    def config(self) -> dict[str, Any]:
        return {"state": self.state_dim, "inputs": self.input_dim}

    # pre-activation and output
    def _out(self, h: Any, x: Any) -> tuple[Any, Any, dict[str, Any]]:
        xp = array_namespace(h, x)
        x = check_inputs(self, x)
        p = _arrays(self, xp, _compute_dtype(h, x))
        a = xp.matmul(h, p["W"].T)
        if x is not None:
            a = a + xp.matmul(x, p["U"].T)
        return xp, xp.tanh(a + p["b"]), p

    def f(self, h: Any, x: Any = None) -> Any:
        r""":math:`\tanh(W h + U x + b)`, shape ``(..., D)``."""
        return self._out(h, x)[1]

    def jacobian(self, h: Any, x: Any = None) -> Any:
        r""":math:`J = \operatorname{diag}(1 - f^2)\, W`, shape ``(..., D, D)``."""
        return self.f_and_jacobian(h, x)[1]

    def _cuda(self, h: Any, x: Any, jac: str) -> tuple[Any, Any] | None:
        """``(f, J)`` by the CUDA kernel (:mod:`pitsolve.models.rnn._cuda`) on a backend with
        CUDA kernels, else None; the input projection ``U x + b`` is one GEMM before."""
        if not self._backend_for(h, x).cuda:
            return None
        from . import _cuda

        xp = array_namespace(h, x)
        x = check_inputs(self, x)
        p = _arrays(self, xp, _compute_dtype(h, x))
        P = p["b"] if x is None else xp.matmul(x, p["U"].T) + p["b"]
        return _cuda.elman_eval(p["W"], h.astype(P.dtype, copy=False), P, jac, xp)

    def f_and_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        r""":math:`f` and :math:`J = \operatorname{diag}(1 - f^2)\, W` from one evaluation (on
        a backend with CUDA kernels: one kernel)."""
        if (gpu := self._cuda(h, x, "dense")) is not None:
            return gpu
        _, y, p = self._out(h, x)
        return y, (1 - y * y)[..., :, None] * p["W"]

    def diagonal_jacobian(self, h: Any, x: Any = None) -> Any:
        r""":math:`\operatorname{diag} J = (1 - f^2) \odot \operatorname{diag} W`."""
        return self.f_and_diagonal_jacobian(h, x)[1]

    def f_and_diagonal_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        r""":math:`f` and :math:`(1 - f^2) \odot \operatorname{diag} W`."""
        if (gpu := self._cuda(h, x, "diag")) is not None:
            return gpu
        xp, y, _ = self._out(h, x)
        dW = _derived(self, "diagW", xp, y.dtype, lambda q: xp.diagonal(q["W"]).copy())
        return y, (1 - y * y) * dW

    def jvp(self, h: Any, x: Any, v: Any) -> Any:
        r""":math:`J v = (1 - f^2) \odot (W v)`."""
        xp, y, p = self._out(h, x)
        return (1 - y * y) * xp.matmul(v, p["W"].T)

    def vjp_h(self, h: Any, x: Any, u: Any) -> Any:
        r""":math:`J^\top u = W^\top ((1 - f^2) \odot u)`."""
        xp, y, p = self._out(h, x)
        return xp.matmul((1 - y * y) * u, p["W"])

    def linearize(self, h: Any, x: Any = None) -> ElmanLinearization:
        r"""The Jacobians :math:`J = \operatorname{diag}(s)\, W`, :math:`s = 1 - f(h, x)^2`,
        from one evaluation of f: each product is then one matrix product and one
        elementwise product (see :class:`ElmanLinearization`)."""
        xp, y, p = self._out(h, x)
        s = y
        xp.multiply(y, y, out=s)
        xp.subtract(1, s, out=s)
        return ElmanLinearization(s, p["W"])

    def vjp_params(self, h: Any, x: Any, u: Any) -> Params:
        r"""With :math:`g = (1-f^2) \odot u`: :math:`\bar W = \sum g h^\top`,
        :math:`\bar U = \sum g x^\top`, :math:`\bar b = \sum g` (sums over all leading axes)."""
        xp, y, p = self._out(h, x)
        g = (1 - y * y) * u
        x = check_inputs(self, x)
        if x is None:
            dU = xp.zeros(p["U"].shape, dtype=g.dtype)
        else:
            dU = _outer_sum(xp, g, x)
        return Params(W=_outer_sum(xp, g, h), U=dU, b=_lead_sum(xp, g))

    def vjp_inputs(self, h: Any, x: Any, u: Any) -> Any:
        r""":math:`(\partial f/\partial x)^\top u = U^\top ((1 - f^2) \odot u)`."""
        if self.input_dim == 0:
            return None
        xp, y, p = self._out(h, x)
        return xp.matmul((1 - y * y) * u, p["U"])

    # -- compiled loops (the hooks of pitsolve.models._loops) ---------------------------------
    def _loop(self, H0: np.ndarray, X: Any, Z: Any, A: Any, T: int) -> np.ndarray:
        """The compiled loop over t in the dtype of ``H0``, forced by ``Z``, ``A``
        ``(B, T, D)`` unless they are None: :math:`U x_t + b` for all t by one BLAS product,
        then the state-dependent work step by step."""
        p = _arrays(self, np, H0.dtype)
        WT = _derived(self, "WT", np, H0.dtype, lambda q: np.ascontiguousarray(q["W"].T))
        out = np.empty((H0.shape[0], T, self.state_dim), dtype=H0.dtype)
        if X is None:
            out[...] = p["b"]
        else:
            np.matmul(X, p["U"].T, out=out)
            out += p["b"]
        _rnn_numba.elman_loop(WT, H0, Z, A, out)
        return out

    def _loop_bptt(
        self, H0: np.ndarray, X: Any, S: np.ndarray, G: np.ndarray, Z: Any, A: Any
    ) -> tuple[Params, np.ndarray, np.ndarray, Any, Any]:
        r"""The compiled backward loop (see :meth:`Model.bptt`) on flat arrays:
        ``(params_bar, h0_bar, x_bar, zhat_bar, a_bar)``.

        Per step the output :math:`y_t = \tanh(W h_{t-1} + U x_t + b)` is recomputed from the
        stored :math:`h_{t-1}` (one pass over W, as in the forward loop), then with
        :math:`\gamma_t = (1 - y_t^2) \odot \lambda_t` one pass over W gives
        :math:`J_t^\top \lambda_t = W^\top \gamma_t`; the outer products
        :math:`\gamma_t h_{t-1}^\top` are added to :math:`\bar W` eight steps at a time.
        Setting ``_bptt_recompute = False`` on an instance reads :math:`y_t = h_t` from
        ``states`` instead (a step then costs less than a forward step; the two agree to
        rounding when ``states`` is the trajectory, and only then). Computes in the dtype of
        ``states``.
        """
        check_inputs(self, X)
        dt = S.dtype
        B, T, D = S.shape
        N = self.input_dim
        p = _arrays(self, np, dt)
        gw, gu, gb = np.zeros((D, D), dt), np.zeros((D, N), dt), np.zeros(D, dt)
        h0_bar = np.zeros_like(H0)
        Xk = np.zeros((B, T, 0), dt) if X is None else X
        x_bar = np.zeros(Xk.shape, dt)
        WT, W, UT, U = _derived(
            self,
            "bpttW",
            np,
            dt,
            lambda q: tuple(np.ascontiguousarray(a) for a in (q["W"].T, q["W"], q["U"].T, q["U"])),
        )
        zb = None if Z is None else np.empty_like(Z)
        ab = None if A is None else np.empty_like(A)
        recompute = self._bptt_recompute or Z is not None  # forced states aren't outputs
        _rnn_numba.elman_bptt(
            WT, W, UT, U, p["b"], H0, Xk, S, G, recompute, Z, A,
            gw, gu, gb, h0_bar, x_bar, zb, ab,
        )  # fmt: skip
        return Params(W=gw, U=gu, b=gb), h0_bar, x_bar, zb, ab


class ElmanLinearization(Linearization):
    r"""Elman's Jacobians :math:`J = \operatorname{diag}(s)\, W` with :math:`s = 1 - y^2`
    cached: :math:`J v = s \odot (W v)` and :math:`J^\top u = W^\top (s \odot u)`, each
    one matrix product over all steps and one elementwise product, written in place.

    Holds ``s`` (the shape of ``h``) and, after the first :meth:`vjp`, one work array of
    that size.
    """

    def __init__(self, s: Any, W: Any):
        self.s, self.W = s, W
        self._work: Any = None

    def jvp(self, v: Any, out: Any = None) -> Any:
        r""":math:`s \odot (W v)`; written into ``out`` when given."""
        xp = array_namespace(v, self.s)
        Wv = xp.matmul(v, self.W.T, out=out)
        if np.broadcast_shapes(Wv.shape, self.s.shape) != Wv.shape:
            return Wv * self.s
        Wv *= self.s
        return Wv

    def vjp(self, u: Any, out: Any = None) -> Any:
        r""":math:`W^\top (s \odot u)`; written into ``out`` when given."""
        xp = array_namespace(u, self.s)
        shape = np.broadcast_shapes(u.shape, self.s.shape)
        dtype = np.result_type(u.dtype, self.s.dtype)
        if self._work is None or self._work.shape != shape or self._work.dtype != dtype:
            self._work = xp.empty(shape, dtype=dtype)
        xp.multiply(self.s, u, out=self._work)
        return xp.matmul(self._work, self.W, out=out)
