r"""The gated recurrent unit (GRU), with hand-derived derivatives; written against the array
namespace of the state, batched over any leading axes, computing in the floating dtype of its
array arguments. Its loops over time are compiled on the Numba backend."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

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
    _sigmoid,
)
from ..base import Model, Params

__all__ = ["GRU"]


class _GRUGates(NamedTuple):
    xp: Any
    p: dict[str, Any]  # the parameters
    s: dict[str, Any]  # stacked parameters: Wzr = [Wz; Wr], U = [Uz; Ur; Un], b = [bz; br; bn]
    z: Any
    r: Any
    n: Any


class GRU(Model):
    r"""Gated recurrent unit (Cho et al. 2014), reset gate applied before :math:`W_n`:

    .. math::

        z &= \sigma(W_z h + U_z x + b_z), \qquad r = \sigma(W_r h + U_r x + b_r), \\
        n &= \tanh(W_n (r \odot h) + U_n x + b_n), \\
        h' &= (1 - z) \odot n + z \odot h.

    (PyTorch's ``nn.GRU`` applies :math:`r` after :math:`W_n`; this is the original variant.)

    With :math:`a_z = (h - n) \odot z(1-z)`, :math:`a_n = (1-z) \odot (1-n^2)` and
    :math:`c = h \odot r(1-r)` the Jacobian is

    .. math::

        J = \operatorname{diag}(z) + \operatorname{diag}(a_z) W_z
            + \operatorname{diag}(a_n) W_n \left(\operatorname{diag}(r)
            + \operatorname{diag}(c) W_r\right).

    Parameters
    ----------
    state : D, the number of hidden units.
    inputs : N_x, the input size (0: autonomous; the ``U`` matrices then have shape ``(D, 0)``).
    seed : seed of ``numpy.random.default_rng`` for the initialisation.
    dtype : float32 or float64; default float64, or the dtype of ``params`` when given.
    params : optional mapping with exactly ``"Wz","Uz","bz","Wr","Ur","br","Wn","Un","bn"``
        (``W*`` ``(D, D)``, ``U*`` ``(D, N_x)``, ``b*`` ``(D,)``).

    Notes
    -----
    Initialisation as PyTorch's: every parameter :math:`\sim \mathcal U(-1/\sqrt D, 1/\sqrt D)`,
    drawn in the order of the names above.
    """

    _NAMES = ("Wz", "Uz", "bz", "Wr", "Ur", "br", "Wn", "Un", "bn")

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
        shapes = {}
        for gate in "zrn":
            shapes |= {f"W{gate}": (D, D), f"U{gate}": (D, N), f"b{gate}": (D,)}
        if params is None:
            rng = np.random.default_rng(seed)
            k = 1.0 / np.sqrt(D)
            arrays = {n: rng.uniform(-k, k, size=s) for n, s in shapes.items()}
            arrays = {n: v.astype(np.float64 if dt is None else dt) for n, v in arrays.items()}
        else:
            arrays = _given_params("GRU", params, shapes, dt)
        super().__init__(Params(arrays), state_dim=D, input_dim=N)

    def config(self) -> dict[str, Any]:
        return {"state": self.state_dim, "inputs": self.input_dim}

    # stacked parameters: one matmul for both gates and one for all input projections
    def _stacked(self, xp: Any, dtype: Any) -> dict[str, Any]:
        def build(p: dict[str, Any]) -> dict[str, Any]:
            return {
                "Wzr": xp.concatenate([p["Wz"], p["Wr"]], axis=0),
                "U": xp.concatenate([p["Uz"], p["Ur"], p["Un"]], axis=0),
                "b": xp.concatenate([p["bz"], p["br"], p["bn"]]),
            }

        return _derived(self, "stacked", xp, dtype, build)

    def _gates(self, h: Any, x: Any) -> _GRUGates:
        """The gates z, r, n at ``(h, x)``, with the namespace and the parameter arrays."""
        xp = array_namespace(h, x)
        x = check_inputs(self, x)
        dtype = _compute_dtype(h, x)
        p, s = _arrays(self, xp, dtype), self._stacked(xp, dtype)
        D = self.state_dim
        pre = s["b"] if x is None else xp.matmul(x, s["U"].T) + s["b"]
        zr = xp.matmul(h, s["Wzr"].T) + pre[..., : 2 * D]
        z = _sigmoid(xp, zr[..., :D])
        r = _sigmoid(xp, zr[..., D:])
        n = xp.tanh(xp.matmul(r * h, p["Wn"].T) + pre[..., 2 * D :])
        return _GRUGates(xp, p, s, z, r, n)

    def f(self, h: Any, x: Any = None) -> Any:
        r""":math:`h' = (1 - z) \odot n + z \odot h`, shape ``(..., D)``."""
        g = self._gates(h, x)
        return g.n + g.z * (h - g.n)

    def jacobian(self, h: Any, x: Any = None) -> Any:
        r"""Dense :math:`J` ``(..., D, D)`` (see the class docstring); O(D³) per step."""
        return self.f_and_jacobian(h, x)[1]

    def _cuda(self, h: Any, x: Any, jac: str) -> tuple[Any, Any] | None:
        """``(f, J)`` by the CUDA kernel (:mod:`pitsolve.models.rnn._cuda`) on a backend with
        CUDA kernels, else None; the input projections are one GEMM before."""
        if not self._backend_for(h, x).cuda:
            return None
        from . import _cuda

        xp = array_namespace(h, x)
        x = check_inputs(self, x)
        dtype = _compute_dtype(h, x)
        p, s = _arrays(self, xp, dtype), self._stacked(xp, dtype)
        P = s["b"] if x is None else xp.matmul(x, s["U"].T) + s["b"]
        return _cuda.gru_eval(p["Wz"], p["Wr"], p["Wn"], h.astype(dtype, copy=False), P, jac,
                              xp)

    def f_and_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        """f and its dense Jacobian from one evaluation of the gates (on a backend with CUDA
        kernels: one kernel)."""
        if (gpu := self._cuda(h, x, "dense")) is not None:
            return gpu
        xp, p, _, z, r, n = self._gates(h, x)
        D = self.state_dim
        dh = h - n
        az = dh * z * (1 - z)
        an = (1 - z) * (1 - n * n)
        c = h * r * (1 - r)
        lead = np.broadcast_shapes(az.shape[:-1], c.shape[:-1])
        Wn = p["Wn"]
        # Wn diag(c) Wr for every step at once: one (… D, D) @ (D, D) product; then J built in
        # that array, so that at most two (…, D, D) arrays exist at a time
        WnC = xp.broadcast_to(Wn * c[..., None, :], (*lead, D, D))
        J = xp.matmul(WnC.reshape(-1, D), p["Wr"]).reshape(*lead, D, D)
        del WnC
        J += Wn * r[..., None, :]
        J *= an[..., :, None]
        J += az[..., :, None] * p["Wz"]
        idx = xp.arange(D)
        J[..., idx, idx] += z
        return n + z * dh, J

    def diagonal_jacobian(self, h: Any, x: Any = None) -> Any:
        r""":math:`\operatorname{diag} J = z + a_z \odot \operatorname{diag} W_z
        + a_n \odot (r \odot \operatorname{diag} W_n + Q c)` with
        :math:`Q_{ij} = (W_n)_{ij} (W_r)_{ji}`; O(D²) per step."""
        return self.f_and_diagonal_jacobian(h, x)[1]

    def f_and_diagonal_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        """f and the diagonal of its Jacobian (on a backend with CUDA kernels: one kernel)."""
        if (gpu := self._cuda(h, x, "diag")) is not None:
            return gpu
        xp, _, _, z, r, n = self._gates(h, x)
        dh = h - n
        az = dh * z * (1 - z)
        an = (1 - z) * (1 - n * n)
        c = h * r * (1 - r)

        def build(q: dict[str, Any]) -> dict[str, Any]:
            return {
                "dz": xp.diagonal(q["Wz"]).copy(),
                "dn": xp.diagonal(q["Wn"]).copy(),
                "QT": (q["Wn"] * q["Wr"].T).T.copy(),
            }

        d = _derived(self, "diag", xp, z.dtype, build)
        diag = z + az * d["dz"] + an * (r * d["dn"] + xp.matmul(c, d["QT"]))
        return n + z * dh, diag

    def jvp(self, h: Any, x: Any, v: Any) -> Any:
        r""":math:`J v = (h-n) \odot \dot z + (1-z) \odot \dot n + z \odot v` with
        :math:`\dot z = z(1-z) \odot W_z v`, :math:`\dot r = r(1-r) \odot W_r v`,
        :math:`\dot n = (1-n^2) \odot W_n(\dot r \odot h + r \odot v)`."""
        xp, p, s, z, r, n = self._gates(h, x)
        D = self.state_dim
        wv = xp.matmul(v, s["Wzr"].T)
        dz = z * (1 - z) * wv[..., :D]
        dr = r * (1 - r) * wv[..., D:]
        dn = (1 - n * n) * xp.matmul(dr * h + r * v, p["Wn"].T)
        return (h - n) * dz + (1 - z) * dn + z * v

    def _pre_grads(self, h: Any, x: Any, u: Any) -> tuple[_GRUGates, Any, Any]:
        r"""The gates, :math:`G = [g_z, g_r, g_n]` (cotangents of the three pre-activations,
        ``(..., 3D)``) and :math:`q = W_n^\top g_n` (the cotangent of :math:`r \odot h`)."""
        gates = self._gates(h, x)
        xp, p, _, z, r, n = gates
        gz = u * (h - n) * z * (1 - z)
        gn = u * (1 - z) * (1 - n * n)
        q = xp.matmul(gn, p["Wn"])
        gr = q * h * r * (1 - r)
        return gates, xp.concatenate(xp.broadcast_arrays(gz, gr, gn), axis=-1), q

    def vjp_h(self, h: Any, x: Any, u: Any) -> Any:
        r""":math:`J^\top u = z \odot u + r \odot q + W_z^\top g_z + W_r^\top g_r` with
        :math:`g_n = (1-z)(1-n^2) u`, :math:`q = W_n^\top g_n`, :math:`g_z = (h-n) z(1-z) u`,
        :math:`g_r = r(1-r)\, h \odot q`."""
        gates, G, q = self._pre_grads(h, x, u)
        D = self.state_dim
        xp = gates.xp
        return gates.z * u + gates.r * q + xp.matmul(G[..., : 2 * D], gates.s["Wzr"])

    def vjp_params(self, h: Any, x: Any, u: Any) -> Params:
        r""":math:`\bar W_z = \sum g_z h^\top`, :math:`\bar W_r = \sum g_r h^\top`,
        :math:`\bar W_n = \sum g_n (r \odot h)^\top`, :math:`\bar U_\ast = \sum g_\ast x^\top`,
        :math:`\bar b_\ast = \sum g_\ast` (sums over all leading axes)."""
        gates, G, _ = self._pre_grads(h, x, u)
        xp = gates.xp
        x = check_inputs(self, x)
        D, N = self.state_dim, self.input_dim
        dWzr = _outer_sum(xp, G[..., : 2 * D], h)
        dWn = _outer_sum(xp, G[..., 2 * D :], gates.r * h)
        db = _lead_sum(xp, G)
        dU = xp.zeros((3 * D, N), dtype=G.dtype) if x is None else _outer_sum(xp, G, x)
        out = {}
        for i, gate in enumerate("zrn"):
            out[f"W{gate}"] = dWn if gate == "n" else dWzr[i * D : (i + 1) * D]
            out[f"U{gate}"] = dU[i * D : (i + 1) * D]
            out[f"b{gate}"] = db[i * D : (i + 1) * D]
        return Params({k: out[k] for k in self._NAMES})

    def vjp_inputs(self, h: Any, x: Any, u: Any) -> Any:
        r""":math:`U_z^\top g_z + U_r^\top g_r + U_n^\top g_n`."""
        if self.input_dim == 0:
            return None
        gates, G, _ = self._pre_grads(h, x, u)
        return gates.xp.matmul(G, gates.s["U"])

    # -- compiled loops (the hooks of pitsolve.models._loops) ---------------------------------
    def _loop(self, H0: np.ndarray, X: Any, Z: Any, A: Any, T: int) -> np.ndarray:
        """The compiled loop over t in the dtype of ``H0``, forced by ``Z``, ``A``
        ``(B, T, D)`` unless they are None: the input projections for all t by one BLAS
        product, then the gates step by step."""
        dtype = H0.dtype
        s = self._stacked(np, dtype)
        if X is None:
            pre = s["b"].reshape(1, 1, -1)
        else:
            pre = np.matmul(X, s["U"].T)
            pre += s["b"]

        def transposed(q: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
            Wzr = np.concatenate([q["Wz"], q["Wr"]], axis=0)
            return np.ascontiguousarray(Wzr.T), np.ascontiguousarray(q["Wn"].T)

        WzrT, WnT = _derived(self, "seqT", np, dtype, transposed)
        out = np.empty((H0.shape[0], T, self.state_dim), dtype=dtype)
        _rnn_numba.gru_loop(WzrT, WnT, H0, np.ascontiguousarray(pre), Z, A, out)
        return out

    def _loop_bptt(
        self, H0: np.ndarray, X: Any, S: np.ndarray, G: np.ndarray, Z: Any, A: Any
    ) -> tuple[Params, np.ndarray, np.ndarray, Any, Any]:
        r"""The compiled backward loop (see :meth:`Model.bptt`) on flat arrays:
        ``(params_bar, h0_bar, x_bar, zhat_bar, a_bar)``.

        Per step the gates are recomputed from :math:`h_{t-1}` as the forward loop forms them
        (input projections for all t by one BLAS product first), then the cotangents of the
        three pre-activations give every parameter cotangent and :math:`J_t^\top \lambda_t`:
        passes over :math:`W_{zr}, W_n` (recompute) and :math:`W_n, W_{zr}` (transposed
        products); the weight cotangents take their outer products eight steps at a time.
        Computes in the dtype of ``states``.
        """
        check_inputs(self, X)
        dt = S.dtype
        B, T, D = S.shape
        N = self.input_dim
        s = self._stacked(np, dt)
        if X is None:
            pre = s["b"].reshape(1, 1, -1)
        else:
            pre = np.matmul(X, s["U"].T)
            pre += s["b"]

        def layouts(q: dict[str, Any]) -> tuple[np.ndarray, ...]:
            Wzr = np.concatenate([q["Wz"], q["Wr"]], axis=0)
            U = np.concatenate([q["Uz"], q["Ur"], q["Un"]], axis=0)
            return (
                np.ascontiguousarray(Wzr.T),
                np.ascontiguousarray(q["Wn"].T),
                np.ascontiguousarray(Wzr),
                np.ascontiguousarray(q["Wn"]),
                np.ascontiguousarray(U),
            )

        WzrT, WnT, Wzr, Wn, U = _derived(self, "bpttW", np, dt, layouts)
        gwzr, gwn = np.zeros((2 * D, D), dt), np.zeros((D, D), dt)
        gu, gb = np.zeros((3 * D, N), dt), np.zeros(3 * D, dt)
        h0_bar = np.zeros_like(H0)
        Xk = np.zeros((B, T, 0), dt) if X is None else X
        x_bar = np.zeros(Xk.shape, dt)
        zb = None if Z is None else np.empty_like(Z)
        ab = None if A is None else np.empty_like(A)
        _rnn_numba.gru_bptt(
            WzrT, WnT, Wzr, Wn, U, H0, np.ascontiguousarray(pre), Xk, S, G, Z, A,
            gwzr, gwn, gu, gb, h0_bar, x_bar, zb, ab,
        )  # fmt: skip
        out = {"Wn": gwn}
        for i, gate in enumerate("zrn"):
            if gate != "n":
                out[f"W{gate}"] = gwzr[i * D : (i + 1) * D]
            out[f"U{gate}"] = gu[i * D : (i + 1) * D]
            out[f"b{gate}"] = gb[i * D : (i + 1) * D]
        return Params({k: out[k] for k in self._NAMES}), h0_bar, x_bar, zb, ab
