r"""The shallow PLRNN and its clipped variant (MATH.md §5; the maths in
:mod:`pitsolve.models.plrnn`).

On the Numba backend, for arrays in the parameters' dtype, ``f`` and every derivative run in
compiled kernels parallel over the rows of all leading axes (``_batched``), and the loops over
time are compiled (``_loops``); elsewhere the array-namespace code runs. Both evaluate the same
formulas with the same convention :math:`\operatorname{relu}'(0) = 0`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import numba
import numpy as np

from ..._arrays import array_namespace
from ..._validation import check_positive_int
from ..base import Params
from . import _batched, _loops
from ._common import PLRNNFamily, _add_diagonal, _check_params, _diag_scaled_init

__all__ = ["ClippedShPLRNN", "ShPLRNN"]

_S = TypeVar("_S", bound="_ShPLRNNBase")

_DENSE_KERNEL_MAX_M = 16  # above this, dense Jacobians come from one BLAS product m @ P
_FUSED_VJP_MAX_ML = 1 << 14  # above this, vjp_params sums by BLAS (per-chunk partials grow)


def _chunk(N: int) -> int:
    """Rows per parallel task: a few tasks per thread, at least 64 rows each."""
    return max(64, -(-N // (4 * numba.get_num_threads())))


class _ShPLRNNBase(PLRNNFamily):
    """Shared implementation of the shPLRNN and the clipped shPLRNN."""

    _clipped: ClassVar[bool] = False

    def __init__(
        self,
        latent: int,
        hidden: int,
        *,
        seed: int | np.random.Generator | None = 0,
        dtype: Any = None,
        params: Mapping[str, Any] | None = None,
    ):
        M = check_positive_int(latent, "latent")
        L = check_positive_int(hidden, "hidden")
        shapes = {"a": (M,), "W1": (M, L), "W2": (L, M), "h1": (M,), "h2": (L,)}
        if params is not None:
            p = _check_params(params, shapes, type(self).__name__, dtype)
        else:
            rng = np.random.default_rng(seed)
            a = _diag_scaled_init(rng, M)
            W1 = rng.uniform(-1 / np.sqrt(L), 1 / np.sqrt(L), (M, L))
            W2 = rng.uniform(-1 / np.sqrt(M), 1 / np.sqrt(M), (L, M))
            if self._clipped:
                h2 = rng.uniform(-1 / np.sqrt(L), 1 / np.sqrt(L), L)
            else:
                h2 = np.zeros(L)
            p = Params(a=a, W1=W1, W2=W2, h1=np.zeros(M), h2=h2)
            p = p.astype(np.float64 if dtype is None else dtype)
        super().__init__(p, state_dim=M, input_dim=0)

    @classmethod
    def from_params(cls: type[_S], params: Mapping[str, Any], *, dtype: Any = None) -> _S:
        """The model with the given arrays ``a (M,), W1 (M, L), W2 (L, M), h1 (M,), h2 (L,)``.

        Sizes are read from the shapes; ``dtype`` (default: that of the arrays) casts them.
        """
        for k in ("a", "W2"):
            if k not in params:
                raise ValueError(f"{cls.__name__} params must include {k!r}")
        M, L = np.shape(params["a"])[0], np.shape(params["W2"])[0]
        return cls(M, L, params=params, dtype=dtype)

    def config(self) -> dict[str, Any]:
        return {"latent": self.state_dim, "hidden": self.hidden_dim}

    @property
    def hidden_dim(self) -> int:
        """L, the hidden width."""
        return int(self.params["W2"].shape[0])

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(latent={self.state_dim}, hidden={self.hidden_dim}, "
            f"dtype={self.dtype})"
        )

    # -- pieces -----------------------------------------------------------------------------
    def _pre(self, h: Any) -> tuple[Any, Any]:
        """``(W2 h, W2 h + h2)``; the first is needed only by the clipped model."""
        xp = array_namespace(h)
        pre0 = xp.matmul(h, self.params["W2"].T)
        return pre0, pre0 + self.params["h2"]

    def _phi(self, pre0: Any, pre: Any) -> Any:
        xp = array_namespace(pre)
        phi = xp.maximum(pre, 0)
        if self._clipped:
            phi -= xp.maximum(pre0, 0)
        return phi

    def _mask(self, pre0: Any, pre: Any) -> Any:
        """:math:`\\phi'`: ``1[pre > 0]`` (clipped: ``- 1[pre0 > 0]``) in the float dtype."""
        m = (pre > 0).astype(pre.dtype)
        if self._clipped:
            m -= pre0 > 0
        return m

    def _f_from(self, h: Any, pre0: Any, pre: Any) -> Any:
        xp = array_namespace(h)
        p = self.params
        out = xp.matmul(self._phi(pre0, pre), p["W1"].T)
        out += p["a"] * h
        out += p["h1"]
        return out

    def _P(self) -> Any:
        """``P (L, M²)``, ``P[j, i*M + k] = W1[i, j] W2[j, k]``: all J_t are ``m_t @ P``."""

        def compute() -> Any:
            W1, W2 = self.params["W1"], self.params["W2"]
            xp = array_namespace(W1)
            L, M = W2.shape
            return xp.ascontiguousarray(xp.einsum("ij,jk->jik", W1, W2).reshape(L, M * M))

        return self.cached("P", compute)

    def _C(self) -> Any:
        """``C (L, M)``, ``C[j, i] = W1[i, j] W2[j, i]``: diag(J_t) = a + m_t @ C."""
        return self.cached("C", lambda: (self.params["W1"] * self.params["W2"].T).T.copy())

    def _J_from_mask(self, m: Any) -> Any:
        xp = array_namespace(m)
        return _add_diagonal(xp.matmul(m, self._P()), self.params["a"], self.state_dim)

    # -- compiled evaluation (the Numba backend; arrays in the parameters' dtype) -------------
    def _compiled(self, *arrays: Any) -> bool:
        """True if the Numba kernels serve these arrays: the backend runs compiled kernels
        and the arrays have one shape and the parameters' dtype.

        Within one model and dtype every method takes the same path, so the ReLU masks (which
        depend on the rounding of :math:`W_2 z + h_2`) are identical in all derivatives.
        """
        if not self._backend_for(*arrays).compiled:
            return False
        dt, shape = self.dtype, arrays[0].shape
        return all(x.dtype == dt and x.shape == shape and x.ndim >= 1 for x in arrays)

    def _nb(self) -> tuple[np.ndarray, ...]:
        """Contiguous ``(a, W1, W2ᵀ, h1, h2)`` in one dtype for the kernels."""
        p, dt = self.params, self.dtype
        return self.cached(
            "numba",
            lambda: tuple(
                np.ascontiguousarray(v, dtype=dt)
                for v in (p["a"], p["W1"], p["W2"].T, p["h1"], p["h2"])
            ),
        )

    def _eval(
        self, h: np.ndarray, *, f: bool = False, jac: str = "", hidden: bool = False,
        zhat: Any = None, a: Any = None,
    ) -> Any:
        """The kernel ``shplrnn_eval`` on ``h (..., M)``; ``jac`` is ``""``, "dense" or "diag".

        With ``zhat`` and ``a`` (of the shape of ``h``) it evaluates at the forced states
        ``(1 - a) h + a zhat`` and the Jacobians are those in ``h``.
        Returns ``(F, J, PHI, MASK, ON)`` with the rows flattened (None where not requested).
        """
        M, L, dt = self.state_dim, self.hidden_dim, self.dtype
        H = np.ascontiguousarray(h.reshape(-1, M))
        N = H.shape[0]
        # dense J in the kernel for small M; for larger M the masks go to one BLAS product
        dense_in_kernel = jac == "dense" and M <= _DENSE_KERNEL_MAX_M
        masks = hidden or (jac == "dense" and not dense_in_kernel)

        def buf(wanted: bool, width: int) -> np.ndarray:
            return np.empty((N if wanted else 0, width), dtype=dt)

        F, J, Dg = buf(f, M), buf(dense_in_kernel, M * M), buf(jac == "diag", M)
        PHI, MASK, ON = buf(hidden, L), buf(masks, L), buf(hidden, L)
        P = self._P() if dense_in_kernel else np.empty((0, M * M), dtype=dt)
        C = self._C() if jac == "diag" else np.empty((0, M), dtype=dt)
        if zhat is None:
            ZH = FA = np.empty((0, M), dtype=dt)
        else:
            ZH, FA = (np.ascontiguousarray(v.reshape(-1, M)) for v in (zhat, a))
        a_, W1, W2T, h1, h2 = self._nb()
        _batched.shplrnn_eval(
            a_, W1, W2T, h1, h2, P, C, self._clipped, H, ZH, FA, F, J, Dg, PHI, MASK, ON,
            _chunk(N),
        )  # fmt: skip
        if jac == "dense" and not dense_in_kernel:
            J = self._J_from_mask(MASK)
            if zhat is not None:
                J *= (1 - FA)[:, None, :]
        return (
            F if f else None,
            {"dense": J, "diag": Dg, "": None}[jac],
            PHI if hidden else None,
            MASK if masks else None,
            ON if hidden else None,
        )

    def _forced_eval(self, h: Any, zhat: Any, a: Any, jac: str = "") -> Any:
        r"""``(f(z), Jacobian of h ↦ f(z))`` at :math:`z = (1 - a) \odot h + a \odot \hat z`
        in one compiled pass (the Jacobian: ``jac`` ``"dense"`` :math:`J(z)
        \operatorname{diag}(1 - a)`, ``"diag"``, or ``""`` for None), or None if the arrays do
        not suit the kernels. The evaluation of
        :class:`~pitsolve.models.ForcedPredictionModel`."""
        if not self._compiled(h, zhat, a):
            return None
        M = self.state_dim
        F, J, *_ = self._eval(h, f=True, jac=jac, zhat=zhat, a=a)
        if J is not None:
            J = self._lead(h, J, M, M) if jac == "dense" else self._lead(h, J, M)
        return self._lead(h, F, M), J

    @staticmethod
    def _lead(h: Any, arr: Any, *tail: int) -> Any:
        """``arr`` with its rows unflattened to the leading axes of ``h``."""
        return arr.reshape(*h.shape[:-1], *tail)

    def _cuda(self, h: Any, jac: str) -> tuple[Any, Any] | None:
        """``(f, J)`` by the CUDA kernel (:mod:`._cuda`) on a backend with CUDA kernels, for
        arrays in the parameters' dtype; else None."""
        p = self._cuda_params(h)
        if p is None:
            return None
        from . import _cuda

        return _cuda.shplrnn_eval(p, self._clipped, h, jac, array_namespace(h))

    # -- the protocol -----------------------------------------------------------------------
    def f(self, h: Any, x: Any = None) -> Any:
        r""":math:`f(z) = a \odot z + W_1 \phi(z) + h_1` (``x`` is ignored). Shape ``(..., M)``."""
        if (gpu := self._cuda(h, "")) is not None:
            return gpu[0]
        if self._compiled(h):
            return self._lead(h, self._eval(h, f=True)[0], self.state_dim)
        pre0, pre = self._pre(h)
        return self._f_from(h, pre0, pre)

    def jacobian(self, h: Any, x: Any = None) -> Any:
        r""":math:`J = \operatorname{diag}(a) + W_1 \operatorname{diag}(m) W_2`, ``(..., M, M)``.

        :math:`J_t = \operatorname{diag}(a) + \operatorname{reshape}(m_t P)` with
        :math:`P_{j,(i,k)} = (W_1)_{ij} (W_2)_{jk}` cached (MATH.md §3): a compiled loop over the
        active units for small M, one BLAS product over all leading axes otherwise.
        """
        M = self.state_dim
        if (gpu := self._cuda(h, "dense")) is not None:
            return gpu[1]
        if self._compiled(h):
            return self._lead(h, self._eval(h, jac="dense")[1], M, M)
        return self._J_from_mask(self._mask(*self._pre(h)))

    def f_and_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        """:math:`f` and :math:`J` from one evaluation of the pre-activations."""
        M = self.state_dim
        if (gpu := self._cuda(h, "dense")) is not None:
            return gpu
        if self._compiled(h):
            F, J, *_ = self._eval(h, f=True, jac="dense")
            return self._lead(h, F, M), self._lead(h, J, M, M)
        pre0, pre = self._pre(h)
        return self._f_from(h, pre0, pre), self._J_from_mask(self._mask(pre0, pre))

    def diagonal_jacobian(self, h: Any, x: Any = None) -> Any:
        r""":math:`\operatorname{diag} J = a + m\,C`, :math:`C_{ji} = (W_1)_{ij} (W_2)_{ji}`."""
        if (gpu := self._cuda(h, "diag")) is not None:
            return gpu[1]
        if self._compiled(h):
            return self._lead(h, self._eval(h, jac="diag")[1], self.state_dim)
        xp = array_namespace(h)
        return xp.matmul(self._mask(*self._pre(h)), self._C()) + self.params["a"]

    def f_and_diagonal_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        """:math:`f` and :math:`\\operatorname{diag} J` from one pass over the pre-activations."""
        M = self.state_dim
        if (gpu := self._cuda(h, "diag")) is not None:
            return gpu
        if self._compiled(h):
            F, Dg, *_ = self._eval(h, f=True, jac="diag")
            return self._lead(h, F, M), self._lead(h, Dg, M)
        xp = array_namespace(h)
        pre0, pre = self._pre(h)
        d = xp.matmul(self._mask(pre0, pre), self._C()) + self.params["a"]
        return self._f_from(h, pre0, pre), d

    def _jvp_compiled(self, h: np.ndarray, w: np.ndarray, transpose: bool) -> np.ndarray:
        M = self.state_dim
        H = np.ascontiguousarray(h.reshape(-1, M))
        V = np.ascontiguousarray(w.reshape(-1, M))
        out = np.empty_like(H)
        a, W1, W2T, _, h2 = self._nb()
        _batched.shplrnn_jvp(
            a, W1, W2T, h2, self._clipped, H, V, out, transpose, _chunk(H.shape[0])
        )
        return self._lead(h, out, M)

    def jvp(self, h: Any, x: Any, v: Any) -> Any:
        r""":math:`J v = a \odot v + W_1 (m \odot W_2 v)`, matrix-free, O(M L) per step."""
        if self._compiled(h, v):
            return self._jvp_compiled(h, v, False)
        xp = array_namespace(h, v)
        p = self.params
        m = self._mask(*self._pre(h))
        out = xp.matmul(m * xp.matmul(v, p["W2"].T), p["W1"].T)
        out += p["a"] * v
        return out

    def vjp_h(self, h: Any, x: Any, u: Any) -> Any:
        r""":math:`J^\top u = a \odot u + W_2^\top (m \odot W_1^\top u)`, matrix-free."""
        if self._compiled(h, u):
            return self._jvp_compiled(h, u, True)
        xp = array_namespace(h, u)
        p = self.params
        m = self._mask(*self._pre(h))
        out = xp.matmul(m * xp.matmul(u, p["W1"]), p["W2"])
        out += p["a"] * u
        return out

    def vjp_params(self, h: Any, x: Any, u: Any) -> Params:
        r""":math:`\sum (\partial f/\partial\theta)^\top u` over all leading axes.

        With :math:`s = W_1^\top u`: :math:`\bar a = \sum u \odot z`,
        :math:`\bar W_1 = \sum u \phi^\top`, :math:`\bar h_1 = \sum u`,
        :math:`\bar h_2 = \sum 1[p > 0] \odot s`, :math:`\bar W_2 = \sum (m \odot s) z^\top`;
        the sums over leading axes are matrix products over the flattened rows.
        """
        xp = array_namespace(h, u)
        p = self.params
        M, L = self.state_dim, self.hidden_dim
        h, u = xp.broadcast_arrays(h, u)
        hf, uf = h.reshape(-1, M), u.reshape(-1, M)
        if self._compiled(hf, uf) and M * L <= _FUSED_VJP_MAX_ML:
            return self._vjp_params_fused(hf, uf)
        if self._compiled(hf, uf):
            _, _, phi, m, on = self._eval(hf, hidden=True)
        else:
            pre0, pre = self._pre(hf)
            phi, m, on = self._phi(pre0, pre), self._mask(pre0, pre), pre > 0
        s = xp.matmul(uf, p["W1"])
        s_on = s * on
        s_m = s * m if self._clipped else s_on
        return Params(
            a=xp.sum(uf * hf, axis=0),
            W1=xp.matmul(uf.T, phi),
            W2=xp.matmul(s_m.T, hf),
            h1=xp.sum(uf, axis=0),
            h2=xp.sum(s_on, axis=0),
        )

    def _vjp_params_fused(self, hf: np.ndarray, uf: np.ndarray) -> Params:
        """:meth:`vjp_params` in one compiled pass: per-chunk sums, then a sum over chunks."""
        M, L, dt = self.state_dim, self.hidden_dim, self.dtype
        H, U = np.ascontiguousarray(hf), np.ascontiguousarray(uf)
        N = H.shape[0]
        chunk = max(256, -(-N // 64))  # fixed by N alone: sums independent of thread count
        C = max(1, -(-N // chunk))
        GA, GH1 = np.empty((C, M), dt), np.empty((C, M), dt)
        GW1, GW2T, GH2 = np.empty((C, M, L), dt), np.empty((C, M, L), dt), np.empty((C, L), dt)
        _, W1, W2T, _, h2 = self._nb()
        _batched.shplrnn_vjp_params(
            W1, W2T, h2, self._clipped, H, U, chunk, GA, GW1, GW2T, GH1, GH2
        )
        return Params(
            a=GA.sum(axis=0),
            W1=GW1.sum(axis=0),
            W2=GW2T.sum(axis=0).T.copy(),
            h1=GH1.sum(axis=0),
            h2=GH2.sum(axis=0),
        )

    # -- compiled loops (the hooks of pitsolve.models._loops) ---------------------------------
    def _loop(self, H0: np.ndarray, X: Any, Z: Any, A: Any, T: int) -> np.ndarray:
        """The compiled loop over t, computed in the dtype of ``H0`` (the parameters are cast
        to it); ``X`` is ignored (no inputs)."""
        return self._sequential(H0, T, Z, A)

    def _loop_bptt(self, H0: np.ndarray, X: Any, S: np.ndarray, G: np.ndarray, Z: Any,
                   A: Any) -> tuple[Params, np.ndarray, None, Any, Any]:
        r"""The compiled backward loop (see :meth:`Model.bptt`).

        Per step it recomputes :math:`W_2 z_{t-1} + h_2` and the masks from the stored state,
        forms :math:`\lambda_t`, accumulates every parameter cotangent in place and steps
        :math:`\lambda` back by :math:`J_t^\top`: about five O(M L) passes per step against
        the forward step's two. With forcing, :math:`\lambda_t = g_t + \tilde J_{t+1}^\top
        \lambda_{t+1}`, :math:`\tilde J = \operatorname{diag}(1 - a) J`, and
        :math:`\bar{\hat z}_t = a_t \odot \lambda_t`, :math:`\bar a_t = (\hat z_t -
        f(\tilde z_{t-1})) \odot \lambda_t` (one more O(M L) pass per step for f). The
        inputs' cotangent is zero (no inputs)."""
        pb, h0_bar, zb, ab = self._bptt(H0, S, G, Z, A)
        return pb, h0_bar, None, zb, ab

    def _sequential(
        self, h0: np.ndarray, T: int, Z: Any, A: Any, predictions: bool = False
    ) -> np.ndarray:
        """The compiled loop from ``h0 (..., M)``, forced by ``Z``, ``A`` ``(B, T, M)`` unless
        they are None; returns the states, or the predictions (before forcing)."""
        M = self.state_dim
        a, W1, W2T, h1, h2 = self._nb_dtype(h0.dtype)
        batch = h0.shape[:-1]
        h0f = np.ascontiguousarray(h0.reshape(-1, M))
        out = np.empty((h0f.shape[0], T, M), dtype=h0.dtype)
        pred = np.empty_like(out) if predictions else None
        if out.size:
            _loops.shplrnn_sequential(
                a, W1, W2T, h1, h2, self._clipped, h0f, Z, A, out, pred
            )
        return (out if pred is None else pred).reshape(*batch, T, M)

    def _nb_dtype(self, dtype: Any) -> tuple[np.ndarray, ...]:
        """Contiguous ``(a, W1, W2ᵀ, h1, h2)`` in ``dtype`` (the compiled loops' layout)."""
        return self.cached(
            f"numba:{np.dtype(dtype)}",
            lambda: tuple(
                np.ascontiguousarray(v, dtype=dtype)
                for v in (
                    self.params["a"],
                    self.params["W1"],
                    self.params["W2"].T,
                    self.params["h1"],
                    self.params["h2"],
                )
            ),
        )

    def _bptt(
        self, H0: np.ndarray, S: np.ndarray, G: np.ndarray, Z: Any, A: Any, lam: Any = None
    ) -> tuple[Params, np.ndarray, Any, Any]:
        """The compiled BPTT loop on flat arrays: ``(params_bar, h0_bar, zhat_bar, a_bar)``;
        with ``lam`` (and ``Z`` None) the loss is on the predictions (see
        ``pitsolve.models.plrnn._loops.shplrnn_bptt``)."""
        dt = S.dtype
        M, L = self.state_dim, self.hidden_dim
        a, W1, W2T, h1, h2 = self._nb_dtype(dt)
        ga, gh1, gh2 = np.zeros(M, dt), np.zeros(M, dt), np.zeros(L, dt)
        gw1, gw2t = np.zeros((M, L), dt), np.zeros((M, L), dt)
        h0_bar = np.zeros_like(H0)
        zb = None if Z is None else np.empty_like(Z)
        ab = None if Z is None else np.empty_like(A)
        _loops.shplrnn_bptt(
            a, W1, W2T, h1, h2, self._clipped, H0, S, G, Z, A,
            ga, gw1, gw2t, gh1, gh2, h0_bar, zb, ab, lam,
        )  # fmt: skip
        pb = Params(a=ga, W1=gw1, W2=np.ascontiguousarray(gw2t.T), h1=gh1, h2=gh2)
        return pb, h0_bar, zb, ab


class ShPLRNN(_ShPLRNNBase):
    r"""Shallow PLRNN.

    .. math::

        z_t = a \odot z_{t-1} + W_1 \operatorname{relu}(W_2 z_{t-1} + h_2) + h_1,

    Jacobian :math:`J = \operatorname{diag}(a) + W_1 \operatorname{diag}(1[W_2 z + h_2 > 0]) W_2`.

    Parameters
    ----------
    latent : M, the state dimension.
    hidden : L, the hidden width.
    seed : seed or ``numpy.random.Generator`` of the initialisation (MATH.md §5):
        :math:`a = \operatorname{diag}(K)/\lambda_{\max}(K)`, :math:`K = R^\top R/M + I`,
        :math:`R \sim N(0, 1)^{M\times M}`; :math:`W_1 \sim U(\pm 1/\sqrt L)`,
        :math:`W_2 \sim U(\pm 1/\sqrt M)`, :math:`h_1 = 0`, :math:`h_2 = 0` (drawn in this order).
    dtype : float64 (default) or float32; with ``params``, defaults to their dtype.
    params : explicit arrays ``a (M,), W1 (M, L), W2 (L, M), h1 (M,), h2 (L,)`` instead of the
        random initialisation (see also :meth:`from_params`).

    Notes
    -----
    The model has no inputs: ``x`` is ignored. On the Numba backend (the default for NumPy
    arrays), for arrays in the parameters' dtype, ``f`` and every derivative run in compiled
    kernels, parallel over the rows of all leading axes (``jvp``/``vjp_h`` matrix-free,
    O(M L) per row; ``vjp_params`` summed in one pass); on the other backends, and for mixed
    precision or broadcast shapes, the array-namespace code runs. Both evaluate the same
    formulas with the same convention :math:`\operatorname{relu}'(0) = 0`. ``sequential`` and
    ``bptt`` are compiled loops over t on the Numba backend.
    """


class ClippedShPLRNN(_ShPLRNNBase):
    r"""Clipped shPLRNN, bounded for :math:`|a_i| < 1`.

    .. math::

        z_t = a \odot z_{t-1} + W_1 [\operatorname{relu}(W_2 z_{t-1} + h_2)
              - \operatorname{relu}(W_2 z_{t-1})] + h_1,

    :math:`J = \operatorname{diag}(a) + W_1 \operatorname{diag}(1[W_2 z + h_2 > 0]
    - 1[W_2 z > 0]) W_2`.

    Parameters are those of :class:`ShPLRNN`; the initialisation differs only in
    :math:`h_2 \sim U(\pm 1/\sqrt L)` (drawn last).
    """

    _clipped = True
