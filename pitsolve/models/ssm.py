r"""A diagonal linear state-space model with input-dependent decay and an MLP readout.

.. math::

    h_t = \lambda(x_t) \odot h_{t-1} + B x_t, \qquad
    \lambda(x) = \sigma(W_\lambda x + b_\lambda) \in (0, 1)^D, \qquad
    y_t = C_2 \operatorname{relu}(C_1 h_t + c_1) + c_2 .

The "class 1" models of the GTF-DEER paper (Hess & Durstewitz 2026): the recurrence is affine
in h with a Jacobian that does not depend on h, so one scan solves it (no Newton iterations);
the nonlinearity lives in the readout only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .._arrays import array_namespace
from .._validation import check_positive_int
from . import _rnn_numba
from ._loops import check_inputs
from ._shared import (
    _arrays,
    _broadcast_lead,
    _check_dtype,
    _check_inputs_count,
    _compute_dtype,
    _derived,
    _given_params,
    _lead_sum,
    _outer_sum,
    _sigmoid,
)
from .base import Model, Params

__all__ = ["LinearSSM"]

_DYNAMICS = ("Wl", "bl", "B")
_READOUT = ("C1", "c1", "C2", "c2")


class LinearSSM(Model):
    r"""Diagonal linear SSM :math:`h_t = \lambda(x_t) \odot h_{t-1} + B x_t` with
    :math:`\lambda(x) = \sigma(W_\lambda x + b_\lambda)` and readout
    :math:`y_t = C_2 \operatorname{relu}(C_1 h_t + c_1) + c_2`.

    The Jacobian is diagonal, :math:`J_t = \operatorname{diag} \lambda(x_t)`, and independent
    of h (``is_affine``): DEER converges in one iteration, which is one scan.

    Parameters
    ----------
    state : D, the state size.
    inputs : N_x ≥ 1, the input size.
    readout_hidden : H, the width of the readout's hidden layer.
    outputs : the readout's output size (default: N_x, predicting the next observation).
    seed : seed of ``numpy.random.default_rng`` for the initialisation.
    dtype : float32 or float64; default float64, or the dtype of ``params`` when given.
    params : optional mapping with exactly ``"Wl"`` ``(D, N_x)``, ``"bl"`` ``(D,)``, ``"B"``
        ``(D, N_x)``, ``"C1"`` ``(H, D)``, ``"c1"`` ``(H,)``, ``"C2"`` ``(N_y, H)``, ``"c2"``
        ``(N_y,)``.

    Notes
    -----
    ``model.params`` holds the dynamics (``Wl, bl, B``) and the readout (``C1, c1, C2, c2``);
    ``vjp_params`` (of f) returns zeros for the readout and ``readout_vjp_params`` zeros for the
    dynamics, so the two add up to the gradient of a loss on :math:`y`.

    Initialisation, drawn in this order from one generator:
    :math:`W_\lambda \sim \mathcal U(\pm 1/\sqrt{N_x})`;
    :math:`b_\lambda = \operatorname{logit}(\lambda_0)` with
    :math:`\lambda_0 \sim \mathcal U(0.8, 0.99)` (long memory at zero input);
    :math:`B \sim \mathcal N(0, 1/N_x)`; :math:`C_1 \sim \mathcal U(\pm 1/\sqrt D)`;
    :math:`C_2 \sim \mathcal U(\pm 1/\sqrt H)`; :math:`c_1 = 0`, :math:`c_2 = 0`.
    """

    jacobian_structure = "diagonal"
    is_affine = True

    def __init__(
        self,
        state: int,
        inputs: int,
        *,
        readout_hidden: int = 64,
        outputs: int | None = None,
        seed: int | None = 0,
        dtype: Any = None,
        params: Mapping[str, Any] | None = None,
    ):
        D = check_positive_int(state, "state")
        N = _check_inputs_count(inputs, allow_zero=False)
        H = check_positive_int(readout_hidden, "readout_hidden")
        Ny = N if outputs is None else check_positive_int(outputs, "outputs")
        dt = _check_dtype(dtype)
        shapes = {
            "Wl": (D, N),
            "bl": (D,),
            "B": (D, N),
            "C1": (H, D),
            "c1": (H,),
            "C2": (Ny, H),
            "c2": (Ny,),
        }
        if params is None:
            rng = np.random.default_rng(seed)
            lam0 = rng.uniform(0.8, 0.99, size=D)
            kx, kd, kh = 1 / np.sqrt(N), 1 / np.sqrt(D), 1 / np.sqrt(H)
            arrays = {
                "Wl": rng.uniform(-kx, kx, size=(D, N)),
                "bl": np.log(lam0 / (1 - lam0)),
                "B": rng.normal(0.0, kx, size=(D, N)),
                "C1": rng.uniform(-kd, kd, size=(H, D)),
                "c1": np.zeros(H),
                "C2": rng.uniform(-kh, kh, size=(Ny, H)),
                "c2": np.zeros(Ny),
            }
            arrays = {k: v.astype(np.float64 if dt is None else dt) for k, v in arrays.items()}
        else:
            arrays = _given_params("LinearSSM", params, shapes, dt)
        super().__init__(Params(arrays), state_dim=D, input_dim=N)
        self.readout_hidden = H
        self.output_dim = Ny

    def config(self) -> dict[str, Any]:
        return {"state": self.state_dim, "inputs": self.input_dim,
                "readout_hidden": self.readout_hidden, "outputs": self.output_dim}

    def __repr__(self) -> str:
        return (
            f"LinearSSM(state_dim={self.state_dim}, input_dim={self.input_dim}, "
            f"readout_hidden={self.readout_hidden}, output_dim={self.output_dim})"
        )

    # -- dynamics ------------------------------------------------------------------------------
    def _proj(self, x: Any, dtype: Any) -> tuple[Any, Any, Any]:
        r"""``xp``, :math:`\lambda(x)` and :math:`B x`."""
        xp = array_namespace(x)
        D = self.state_dim
        WB = _derived(self, "WB", xp, dtype, lambda p: xp.concatenate([p["Wl"], p["B"]], axis=0))
        bl = _arrays(self, xp, dtype)["bl"]
        q = xp.matmul(x, WB.T)
        return xp, _sigmoid(xp, q[..., :D] + bl), q[..., D:]

    def _lam(self, h: Any, x: Any) -> tuple[Any, Any, Any]:
        x = check_inputs(self, x)
        xp, lam, Bx = self._proj(x, _compute_dtype(h, x))
        return xp, lam, Bx

    def f(self, h: Any, x: Any = None) -> Any:
        r""":math:`\lambda(x) \odot h + B x`, shape ``(..., D)``."""
        _, lam, Bx = self._lam(h, x)
        return lam * h + Bx

    def jacobian(self, h: Any, x: Any = None) -> Any:
        r"""The diagonal :math:`\lambda(x)`, shape ``(..., D)`` (broadcast to the axes of h)."""
        xp, lam, _ = self._lam(h, x)
        return _broadcast_lead(xp, lam, h)

    def f_and_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        r""":math:`f` and the diagonal :math:`\lambda(x)` from one input projection."""
        xp, lam, Bx = self._lam(h, x)
        return lam * h + Bx, _broadcast_lead(xp, lam, h)

    def diagonal_jacobian(self, h: Any, x: Any = None) -> Any:
        r""":math:`\lambda(x)`."""
        return self.jacobian(h, x)

    def f_and_diagonal_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        r""":math:`f` and :math:`\lambda(x)`."""
        return self.f_and_jacobian(h, x)

    def jvp(self, h: Any, x: Any, v: Any) -> Any:
        r""":math:`\lambda(x) \odot v`."""
        return self._lam(h, x)[1] * v

    def vjp_h(self, h: Any, x: Any, u: Any) -> Any:
        r""":math:`\lambda(x) \odot u`."""
        return self._lam(h, x)[1] * u

    def _zeros(self, xp: Any, dtype: Any, names: tuple[str, ...]) -> dict[str, Any]:
        return {k: xp.zeros(self.params[k].shape, dtype=dtype) for k in names}

    def vjp_params(self, h: Any, x: Any, u: Any) -> Params:
        r"""With :math:`g = u \odot h \odot \lambda(1-\lambda)`:
        :math:`\bar W_\lambda = \sum g x^\top`, :math:`\bar b_\lambda = \sum g`,
        :math:`\bar B = \sum u x^\top`; zeros for the readout parameters."""
        xp, lam, _ = self._lam(h, x)
        g = u * h * lam * (1 - lam)
        out = {
            "Wl": _outer_sum(xp, g, x),
            "bl": _lead_sum(xp, g),
            "B": _outer_sum(xp, _broadcast_lead(xp, u, h, x), x),
        }
        out |= self._zeros(xp, g.dtype, _READOUT)
        return Params({k: out[k] for k in self.params})

    def vjp_inputs(self, h: Any, x: Any, u: Any) -> Any:
        r""":math:`W_\lambda^\top (u \odot h \odot \lambda(1-\lambda)) + B^\top u`."""
        xp, lam, _ = self._lam(h, x)
        p = _arrays(self, xp, lam.dtype)
        g = u * h * lam * (1 - lam)
        return xp.matmul(g, p["Wl"]) + xp.matmul(u, p["B"])

    # -- readout -------------------------------------------------------------------------------
    def _hidden(self, h: Any) -> tuple[Any, dict[str, Any], Any]:
        xp = array_namespace(h)
        p = _arrays(self, xp, h.dtype)
        return xp, p, xp.matmul(h, p["C1"].T) + p["c1"]

    def readout(self, h: Any) -> Any:
        r""":math:`y = C_2 \operatorname{relu}(C_1 h + c_1) + c_2`, shape ``(..., N_y)``."""
        xp, p, a = self._hidden(h)
        return xp.matmul(xp.maximum(a, 0), p["C2"].T) + p["c2"]

    def readout_vjp_h(self, h: Any, u: Any) -> Any:
        r""":math:`(\partial y/\partial h)^\top u = C_1^\top (m \odot C_2^\top u)` with the
        ReLU mask :math:`m = 1[C_1 h + c_1 > 0]`."""
        xp, p, a = self._hidden(h)
        return xp.matmul(xp.matmul(u, p["C2"]) * (a > 0), p["C1"])

    def readout_vjp_params(self, h: Any, u: Any) -> Params:
        r"""With :math:`g = m \odot C_2^\top u`: :math:`\bar C_2 = \sum u\,
        \operatorname{relu}(C_1 h + c_1)^\top`, :math:`\bar c_2 = \sum u`,
        :math:`\bar C_1 = \sum g h^\top`, :math:`\bar c_1 = \sum g` (sums over all leading axes);
        zeros for the dynamics parameters."""
        xp, p, a = self._hidden(h)
        u = _broadcast_lead(xp, u, h)
        g = xp.matmul(u, p["C2"]) * (a > 0)
        out = {
            "C1": _outer_sum(xp, g, h),
            "c1": _lead_sum(xp, g),
            "C2": _outer_sum(xp, u, xp.maximum(a, 0)),
            "c2": _lead_sum(xp, u),
        }
        out |= self._zeros(xp, g.dtype, _DYNAMICS)
        return Params({k: out[k] for k in self.params})

    # -- compiled loops (the hooks of pitsolve.models._loops) ---------------------------------
    def _loop(self, H0: np.ndarray, X: Any, Z: Any, A: Any, T: int) -> np.ndarray | None:
        """The compiled loop over t in the dtype of ``H0`` (no compiled forced loop: None)."""
        if Z is not None:
            return None
        dtype = H0.dtype
        WB = _derived(self, "WB", np, dtype, lambda p: np.concatenate([p["Wl"], p["B"]], axis=0))
        pre = np.matmul(X, WB.T)
        out = np.empty((H0.shape[0], T, self.state_dim), dtype=dtype)
        _rnn_numba.ssm_loop(pre, _arrays(self, np, dtype)["bl"], H0, out)
        return out

    def _loop_bptt(self, H0: np.ndarray, X: Any, S: np.ndarray, G: np.ndarray, Z: Any,
                   A: Any) -> tuple[Params, np.ndarray, np.ndarray, None, None] | None:
        r"""The compiled backward loop of the dynamics (see :meth:`Model.bptt`).

        :math:`W_\lambda x_t` for all t by one BLAS product, then one backward loop:
        :math:`\lambda_t` from it, :math:`J_t^\top u = \lambda_t \odot u`, the cotangents of
        :math:`W_\lambda, b_\lambda, B` accumulated in place, ``inputs_bar`` per step. The
        readout parameters get zeros (add :meth:`readout_vjp_params` for a loss on y).
        No compiled forced loop (None).
        """
        if Z is not None:
            return None
        X = check_inputs(self, X)
        dt = S.dtype
        p = _arrays(self, np, dt)
        Wl, Bm = np.ascontiguousarray(p["Wl"]), np.ascontiguousarray(p["B"])
        P = np.matmul(X, Wl.T)
        grads = {k: np.zeros(self.params[k].shape, dt) for k in self.params}
        h0_bar = np.zeros_like(H0)
        x_bar = np.zeros(X.shape, dt)
        _rnn_numba.ssm_bptt(
            Wl, Bm, p["bl"], H0, P, X, S, G, grads["Wl"], grads["bl"], grads["B"], h0_bar, x_bar
        )
        return Params(grads), h0_bar, x_bar, None, None
