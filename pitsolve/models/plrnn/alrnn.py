r"""The almost-linear RNN (ALRNN; MATH.md §5, the maths in :mod:`pitsolve.models.plrnn`).

Its loops over time are compiled on the Numba backend (``_loops``); on a backend with CUDA
kernels f and its Jacobian are one kernel (``_cuda``); elsewhere its evaluations are the
array-namespace code.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..._arrays import array_namespace
from ..._validation import check_positive_int
from ..base import Params
from . import _loops
from ._common import PLRNNFamily, _add_diagonal, _check_params, _diag_scaled_init

__all__ = ["ALRNN"]


class ALRNN(PLRNNFamily):
    r"""Almost-linear RNN: :math:`z_t = a \odot z_{t-1} + W \Phi(z_{t-1}) + h`.

    :math:`\Phi` is the identity on the first ``M - P`` units and relu on the last ``P``;
    :math:`J = \operatorname{diag}(a) + W \operatorname{diag}(\Phi'(z))`,
    :math:`\Phi'(z) = (1, \dots, 1, 1[z_{M-P+1} > 0], \dots, 1[z_M > 0])`.

    Parameters
    ----------
    latent : M, the state dimension.
    relu_units : P, the number of piecewise-linear units (0 ≤ P ≤ M).
    seed : seed or ``numpy.random.Generator`` of the initialisation (pitsolve's choice, by
        analogy with the shPLRNN): :math:`a = \operatorname{diag}(K)/\lambda_{\max}(K)` as there,
        :math:`W \sim U(\pm 1/\sqrt M)` with zero diagonal (``a`` is the self-coupling),
        :math:`h = 0` (drawn in this order).
    dtype : float64 (default) or float32; with ``params``, defaults to their dtype.
    params : explicit arrays ``a (M,), W (M, M), h (M,)`` (see also :meth:`from_params`).

    The model has no inputs: ``x`` is ignored.
    """

    def __init__(
        self,
        latent: int,
        relu_units: int,
        *,
        seed: int | np.random.Generator | None = 0,
        dtype: Any = None,
        params: Mapping[str, Any] | None = None,
    ):
        M = check_positive_int(latent, "latent")
        if isinstance(relu_units, bool) or not isinstance(relu_units, (int, np.integer)):
            raise TypeError(f"relu_units must be an integer, got {type(relu_units).__name__}")
        if not 0 <= relu_units <= M:
            raise ValueError(
                f"relu_units must satisfy 0 ≤ relu_units ≤ latent={M}, got {relu_units}"
            )
        self.relu_units = int(relu_units)
        shapes = {"a": (M,), "W": (M, M), "h": (M,)}
        if params is not None:
            p = _check_params(params, shapes, "ALRNN", dtype)
        else:
            rng = np.random.default_rng(seed)
            a = _diag_scaled_init(rng, M)
            W = rng.uniform(-1 / np.sqrt(M), 1 / np.sqrt(M), (M, M))
            np.fill_diagonal(W, 0.0)
            p = Params(a=a, W=W, h=np.zeros(M)).astype(np.float64 if dtype is None else dtype)
        super().__init__(p, state_dim=M, input_dim=0)

    @classmethod
    def from_params(cls, params: Mapping[str, Any], relu_units: int, *, dtype: Any = None) -> ALRNN:
        """The model with the given arrays ``a (M,), W (M, M), h (M,)`` and ``P = relu_units``."""
        if "a" not in params:
            raise ValueError("ALRNN params must include 'a'")
        return cls(np.shape(params["a"])[0], relu_units, params=params, dtype=dtype)

    def config(self) -> dict[str, Any]:
        return {"latent": self.state_dim, "relu_units": self.relu_units}

    def __repr__(self) -> str:
        return f"ALRNN(latent={self.state_dim}, relu_units={self.relu_units}, dtype={self.dtype})"

    # -- pieces -----------------------------------------------------------------------------
    def _phi(self, z: Any) -> Any:
        xp = array_namespace(z)
        lin = self.state_dim - self.relu_units
        phi = z.copy()
        phi[..., lin:] = xp.maximum(z[..., lin:], 0)
        return phi

    def _dphi(self, z: Any) -> Any:
        r""":math:`\Phi'(z)`: ones, then ``1[z > 0]`` on the relu units (float dtype)."""
        xp = array_namespace(z)
        lin = self.state_dim - self.relu_units
        d = xp.ones(z.shape, dtype=z.dtype)
        d[..., lin:] = z[..., lin:] > 0
        return d

    def _diagW(self) -> Any:
        xp = array_namespace(self.params["W"])
        return self.cached("diagW", lambda: xp.diagonal(self.params["W"]).copy())

    def _f_from(self, z: Any, phi: Any) -> Any:
        xp = array_namespace(z)
        p = self.params
        out = xp.matmul(phi, p["W"].T)
        out += p["a"] * z
        out += p["h"]
        return out

    def _J_from(self, d: Any) -> Any:
        M = self.state_dim
        J = self.params["W"] * d[..., None, :]
        return _add_diagonal(J.reshape(*J.shape[:-2], M * M), self.params["a"], M)

    # -- the protocol -----------------------------------------------------------------------
    def _cuda(self, h: Any, jac: str) -> tuple[Any, Any] | None:
        """``(f, J)`` by the CUDA kernel, or None where it does not serve ``h``."""
        p = self._cuda_params(h)
        if p is None:
            return None
        from . import _cuda

        return _cuda.alrnn_eval(p, self.relu_units, h, jac, array_namespace(h))

    def f(self, h: Any, x: Any = None) -> Any:
        r""":math:`f(z) = a \odot z + W \Phi(z) + h` (``x`` is ignored). Shape ``(..., M)``."""
        if (gpu := self._cuda(h, "")) is not None:
            return gpu[0]
        return self._f_from(h, self._phi(h))

    def jacobian(self, h: Any, x: Any = None) -> Any:
        r""":math:`J = \operatorname{diag}(a) + W \operatorname{diag}(\Phi'(z))`, ``(…, M, M)``."""
        if (gpu := self._cuda(h, "dense")) is not None:
            return gpu[1]
        return self._J_from(self._dphi(h))

    def f_and_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        """:math:`f` and :math:`J` together."""
        if (gpu := self._cuda(h, "dense")) is not None:
            return gpu
        return self._f_from(h, self._phi(h)), self._J_from(self._dphi(h))

    def f_and_diagonal_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        r""":math:`f` and :math:`\operatorname{diag} J` together."""
        if (gpu := self._cuda(h, "diag")) is not None:
            return gpu
        return self.f(h, x), self.diagonal_jacobian(h, x)

    def diagonal_jacobian(self, h: Any, x: Any = None) -> Any:
        r""":math:`\operatorname{diag} J = a + \operatorname{diag}(W) \odot \Phi'(z)`."""
        if (gpu := self._cuda(h, "diag")) is not None:
            return gpu[1]
        return self.params["a"] + self._diagW() * self._dphi(h)

    def jvp(self, h: Any, x: Any, v: Any) -> Any:
        r""":math:`J v = a \odot v + W (\Phi'(z) \odot v)`, matrix-free."""
        xp = array_namespace(h, v)
        out = xp.matmul(self._dphi(h) * v, self.params["W"].T)
        out += self.params["a"] * v
        return out

    def vjp_h(self, h: Any, x: Any, u: Any) -> Any:
        r""":math:`J^\top u = a \odot u + \Phi'(z) \odot W^\top u`, matrix-free."""
        xp = array_namespace(h, u)
        out = self._dphi(h) * xp.matmul(u, self.params["W"])
        out += self.params["a"] * u
        return out

    def vjp_params(self, h: Any, x: Any, u: Any) -> Params:
        r""":math:`\bar a = \sum u \odot z`, :math:`\bar W = \sum u \Phi(z)^\top`,
        :math:`\bar h = \sum u`, summed over all leading axes."""
        xp = array_namespace(h, u)
        M = self.state_dim
        h, u = xp.broadcast_arrays(h, u)
        hf, uf = h.reshape(-1, M), u.reshape(-1, M)
        return Params(
            a=xp.sum(uf * hf, axis=0),
            W=xp.matmul(uf.T, self._phi(hf)),
            h=xp.sum(uf, axis=0),
        )

    # -- compiled loops (the hooks of pitsolve.models._loops) ---------------------------------
    def _loop(self, H0: np.ndarray, X: Any, Z: Any, A: Any, T: int) -> np.ndarray:
        """The compiled loop over t in the dtype of ``H0``; ``X`` is ignored (no inputs)."""
        return self._sequential(H0, T, Z, A)

    def _loop_bptt(self, H0: np.ndarray, X: Any, S: np.ndarray, G: np.ndarray, Z: Any,
                   A: Any) -> tuple[Params, np.ndarray, None, Any, Any]:
        r"""The compiled backward loop (see :meth:`Model.bptt`): one pass over the rows of W
        per step gives :math:`W^\top \lambda_t` and :math:`\bar W \mathrel{+}= \lambda_t
        \Phi(z_{t-1})^\top`; with forcing as the shPLRNN's. The inputs' cotangent is zero."""
        pb, h0_bar, zb, ab = self._bptt(H0, S, G, Z, A)
        return pb, h0_bar, None, zb, ab

    def _sequential(
        self, h0: np.ndarray, T: int, Z: Any, A: Any, predictions: bool = False
    ) -> np.ndarray:
        M = self.state_dim
        dtype = h0.dtype
        a, WT, h = self.cached(
            f"numba:{dtype}",
            lambda: tuple(
                np.ascontiguousarray(v, dtype=dtype)
                for v in (self.params["a"], self.params["W"].T, self.params["h"])
            ),
        )
        batch = h0.shape[:-1]
        h0f = np.ascontiguousarray(h0.reshape(-1, M))
        out = np.empty((h0f.shape[0], T, M), dtype=dtype)
        pred = np.empty_like(out) if predictions else None
        if out.size:
            _loops.alrnn_sequential(a, WT, h, self.relu_units, h0f, Z, A, out, pred)
        return (out if pred is None else pred).reshape(*batch, T, M)

    def _bptt(
        self, H0: np.ndarray, S: np.ndarray, G: np.ndarray, Z: Any, A: Any, lam: Any = None
    ) -> tuple[Params, np.ndarray, Any, Any]:
        dt = S.dtype
        M = self.state_dim
        a, W, h = self.cached(
            f"numba-bptt:{dt}",
            lambda: tuple(np.ascontiguousarray(self.params[k], dtype=dt) for k in ("a", "W", "h")),
        )
        ga, gw, gh = np.zeros(M, dt), np.zeros((M, M), dt), np.zeros(M, dt)
        h0_bar = np.zeros_like(H0)
        zb = None if Z is None else np.empty_like(Z)
        ab = None if Z is None else np.empty_like(A)
        _loops.alrnn_bptt(
            a, W, h, self.relu_units, H0, S, G, Z, A, ga, gw, gh, h0_bar, zb, ab, lam
        )
        return Params(a=ga, W=gw, h=gh), h0_bar, zb, ab
