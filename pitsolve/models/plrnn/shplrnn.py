r"""Piecewise-linear RNNs for dynamical-systems reconstruction (MATH.md §5).

.. math::

    \text{shPLRNN:}\quad z_t = a \odot z_{t-1} + W_1 \operatorname{relu}(W_2 z_{t-1} + h_2) + h_1

    \text{clipped:}\quad z_t = a \odot z_{t-1}
        + W_1 [\operatorname{relu}(W_2 z_{t-1} + h_2) - \operatorname{relu}(W_2 z_{t-1})] + h_1

    \text{ALRNN:}\quad z_t = a \odot z_{t-1} + W \Phi(z_{t-1}) + h

with Jacobians :math:`J = \operatorname{diag}(a) + W_1 \operatorname{diag}(m) W_2` (shPLRNN
:math:`m = 1[W_2 z + h_2 > 0]`, clipped :math:`m = 1[W_2 z + h_2 > 0] - 1[W_2 z > 0]`) and
:math:`J = \operatorname{diag}(a) + W \operatorname{diag}(\Phi')` (ALRNN).

Convention at the kinks: :math:`\operatorname{relu}'(0) = 0` (strict ``> 0``), used by every
derivative alike, so ``jacobian``, ``jvp``, ``vjp_h``, ``vjp_params`` and ``diagonal_jacobian``
agree with each other everywhere, kinks included.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import numba
import numpy as np

from .._validation import check_positive_int
from ..backends import array_namespace
from . import _plrnn_batched, _plrnn_numba
from ._shared import (
    _bptt_arrays,
    _bptt_forced_arrays,
    _bptt_forced_result,
    _bptt_result,
    _empty_like,
    _forced_setup,
    _generic_bptt_forced,
    _generic_sequential_forced,
)
from .base import Model, Params

__all__ = ["ALRNN", "ClippedShPLRNN", "ShPLRNN"]

_S = TypeVar("_S", bound="_ShPLRNNBase")


def _diag_scaled_init(rng: np.random.Generator, M: int) -> np.ndarray:
    r""":math:`a = \operatorname{diag}(K) / \lambda_{\max}(K)`, :math:`K = R^\top R / M + I`."""
    R = rng.normal(0.0, 1.0, (M, M))
    K = R.T @ R / M + np.eye(M)
    return np.diag(K) / np.linalg.eigvalsh(K)[-1]


def _check_params(
    params: Mapping[str, Any], shapes: dict[str, tuple[int, ...]], cls: str, dtype: Any
) -> Params:
    """``params`` as :class:`Params` in the canonical order, names and shapes checked."""
    if set(params) != set(shapes):
        raise ValueError(f"{cls} params must have the names {list(shapes)}, got {list(params)}")
    p = Params({k: params[k] for k in shapes})
    for k, shape in shapes.items():
        if tuple(p[k].shape) != shape:
            raise ValueError(f"{cls} params[{k!r}] must have shape {shape}, got {p[k].shape}")
    # one dtype for all arrays (the kernels need it): the given one, else the common one
    return p.astype(p.dtype if dtype is None else dtype)


def _add_diagonal(J_flat: Any, a: Any, M: int) -> Any:
    """``J_flat (..., M*M) += vec(diag(a))`` in place; returns ``J_flat`` as ``(..., M, M)``."""
    J_flat[..., :: M + 1] += a
    return J_flat.reshape(*J_flat.shape[:-1], M, M)


_DENSE_KERNEL_MAX_M = 16  # above this, dense Jacobians come from one BLAS product m @ P
_FUSED_VJP_MAX_ML = 1 << 14  # above this, vjp_params sums by BLAS (per-chunk partials grow)


def _chunk(N: int) -> int:
    """Rows per parallel task: a few tasks per thread, at least 64 rows each."""
    return max(64, -(-N // (4 * numba.get_num_threads())))


def _numpy_float(h0: Any, M: int) -> bool:
    """True if ``h0`` can take the compiled path (a NumPy float array with last axis M)."""
    if not isinstance(h0, np.ndarray) or h0.dtype not in (np.float32, np.float64):
        return False
    if h0.ndim < 1 or h0.shape[-1] != M:
        raise ValueError(f"h0 must have shape (..., {M}), got {h0.shape}")
    return True


class _PredictionLoops:
    r"""The compiled loops behind :class:`~pitsolve.training.forcing.ForcedPredictionModel`:
    the forced recurrence :math:`\tilde z_t = (1 - a_t) \odot F(\tilde z_{t-1}) + a_t \odot
    \hat z_t` with the loss on the predictions :math:`z_t = F(\tilde z_{t-1})`. Flat,
    C-contiguous NumPy arrays in one dtype; the caller validates."""

    def _sequential_predictions(self, h0: np.ndarray, Z: np.ndarray, A: np.ndarray) -> Any:
        """The predictions ``(B, T, M)`` of the forced loop from :math:`\tilde z_0` = ``h0``
        ``(B, M)``, forced by ``Z``, ``A`` ``(B, T, M)``."""
        return self._sequential(h0, Z.shape[1], Z, A, predictions=True)  # type: ignore[attr-defined]

    def _bptt_predictions(
        self, H0: np.ndarray, S: np.ndarray, G: np.ndarray, A: np.ndarray
    ) -> tuple[Params, np.ndarray, np.ndarray]:
        r"""BPTT with ``G`` the cotangents of the predictions and ``S`` the forced states:
        :math:`\lambda_t = J(	ilde z_t)^	op \mu_{t+1}` (:math:`\lambda_T = 0`),
        :math:`\mu_t = g_t + (1 - a_t) \odot \lambda_t`,
        :math:`ar	heta = \sum_t (\partial F/\partial	heta)(	ilde z_{t-1})^	op \mu_t`.
        Returns ``(params_bar, h0_bar, lam)``, ``h0_bar`` :math:`= J(	ilde z_0)^	op \mu_1`
        and ``lam`` ``(B, T, M)`` the :math:`\lambda_t`."""
        lam = np.empty_like(S)
        pb, h0_bar, _, _ = self._bptt(H0, S, G, None, A, lam)  # type: ignore[attr-defined]
        return pb, h0_bar, lam


class _ShPLRNNBase(_PredictionLoops, Model):
    """Shared implementation of the shPLRNN and the clipped shPLRNN."""

    _clipped: ClassVar[bool] = False
    #: Evaluate NumPy arrays with the compiled kernels (False: the array-namespace code, which
    #: also serves CuPy; tests and benchmarks switch it per instance).
    _use_kernels: bool = True

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

    @property
    def latent_dim(self) -> int:
        """M, the latent (state) dimension."""
        return self.state_dim

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

    # -- compiled evaluation (NumPy arrays in the parameters' dtype) -------------------------
    def _compiled(self, *arrays: Any) -> bool:
        """True if the Numba kernels serve these arrays: NumPy, one shape, the params' dtype.

        Within one model and dtype every method takes the same path, so the ReLU masks (which
        depend on the rounding of :math:`W_2 z + h_2`) are identical in all derivatives.
        """
        if not self._use_kernels or not isinstance(self.params["a"], np.ndarray):
            return False
        dt, shape = self.dtype, arrays[0].shape
        return all(
            isinstance(x, np.ndarray) and x.dtype == dt and x.shape == shape and x.ndim >= 1
            for x in arrays
        )

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
        _plrnn_batched.shplrnn_eval(
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
        :class:`~pitsolve.training.forcing.ForcedPredictionModel`."""
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

    # -- the protocol -----------------------------------------------------------------------
    def f(self, h: Any, x: Any = None) -> Any:
        r""":math:`f(z) = a \odot z + W_1 \phi(z) + h_1` (``x`` is ignored). Shape ``(..., M)``."""
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
        if self._compiled(h):
            return self._lead(h, self._eval(h, jac="dense")[1], M, M)
        return self._J_from_mask(self._mask(*self._pre(h)))

    def f_and_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        """:math:`f` and :math:`J` from one evaluation of the pre-activations."""
        M = self.state_dim
        if self._compiled(h):
            F, J, *_ = self._eval(h, f=True, jac="dense")
            return self._lead(h, F, M), self._lead(h, J, M, M)
        pre0, pre = self._pre(h)
        return self._f_from(h, pre0, pre), self._J_from_mask(self._mask(pre0, pre))

    def diagonal_jacobian(self, h: Any, x: Any = None) -> Any:
        r""":math:`\operatorname{diag} J = a + m\,C`, :math:`C_{ji} = (W_1)_{ij} (W_2)_{ji}`."""
        if self._compiled(h):
            return self._lead(h, self._eval(h, jac="diag")[1], self.state_dim)
        xp = array_namespace(h)
        return xp.matmul(self._mask(*self._pre(h)), self._C()) + self.params["a"]

    def f_and_diagonal_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        """:math:`f` and :math:`\\operatorname{diag} J` from one pass over the pre-activations."""
        M = self.state_dim
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
        _plrnn_batched.shplrnn_jvp(
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
        _plrnn_batched.shplrnn_vjp_params(
            W1, W2T, h2, self._clipped, H, U, chunk, GA, GW1, GW2T, GH1, GH2
        )
        return Params(
            a=GA.sum(axis=0),
            W1=GW1.sum(axis=0),
            W2=GW2T.sum(axis=0).T.copy(),
            h1=GH1.sum(axis=0),
            h2=GH2.sum(axis=0),
        )

    def sequential(self, h0: Any, inputs: Any, T: int) -> Any:
        """The trajectory ``(..., T, M)`` from ``h0 (..., M)``, stepped by a compiled loop.

        Computes in the dtype of ``h0`` (the parameters are cast to it) and returns that dtype.
        Non-NumPy arrays fall back to the generic loop of :class:`Model`.
        """
        if not _numpy_float(h0, self.state_dim) or not isinstance(self.params["a"], np.ndarray):
            return super().sequential(h0, inputs, T)
        return self._sequential(h0, int(T), None, None)

    def sequential_forced(self, h0: Any, inputs: Any, zhat: Any, a: Any, T: int) -> Any:
        r"""The forced trajectory :math:`\tilde z_t = (1 - a_t) \odot f(\tilde z_{t-1})
        + a_t \odot \hat z_t`, ``(..., T, M)``, stepped by the compiled loop of
        :meth:`sequential` (the model of :class:`~pitsolve.training.forcing.ForcedModel`).

        ``zhat`` and ``a`` are ``(..., T' ≥ T, M)``; the batch axes of ``h0``, ``zhat`` and
        ``a`` broadcast. Computes in the dtype of ``h0``; non-NumPy arrays take a Python loop
        of the forced step. ``inputs`` is ignored.
        """
        if (
            not _numpy_float(h0, self.state_dim)
            or not isinstance(self.params["a"], np.ndarray)
            or not isinstance(zhat, np.ndarray)
            or not isinstance(a, np.ndarray)
        ):
            return _generic_sequential_forced(self, h0, inputs, zhat, a, T)
        T = int(T)
        h0, _, Z, A, _ = _forced_setup(self, h0, None, zhat, a, T)
        return self._sequential(h0, T, Z, A)

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
            _plrnn_numba.shplrnn_sequential(
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

    def bptt(self, h0: Any, inputs: Any, states: Any, g: Any) -> tuple[Params, Any, Any]:
        r"""Backpropagation through time (see :meth:`Model.bptt`), a compiled backward loop.

        Per step it recomputes :math:`W_2 z_{t-1} + h_2` and the masks from the stored state,
        forms :math:`\lambda_t`, accumulates every parameter cotangent in place and steps
        :math:`\lambda` back by :math:`J_t^\top`: about five O(M L) passes per step against
        the forward step's two. Computes in the dtype of ``states``; non-NumPy arrays take
        the generic method. ``inputs`` is ignored (its cotangent is zero).
        """
        flat = _bptt_arrays(self, h0, inputs, states, g)
        if flat is None or not isinstance(self.params["a"], np.ndarray):
            return super().bptt(h0, inputs, states, g)
        H0, _, S, G, lead = flat
        pb, h0_bar, _, _ = self._bptt(H0, S, G, None, None)
        return _bptt_result(pb, h0_bar, None, lead, h0, inputs)

    def bptt_forced(
        self, h0: Any, inputs: Any, zhat: Any, a: Any, states: Any, g: Any
    ) -> tuple[Params, Any, Any, Any, Any]:
        r"""BPTT of the forced recurrence (see :meth:`sequential_forced`), compiled.

        With :math:`\lambda_t = g_t + \tilde J_{t+1}^\top \lambda_{t+1}`,
        :math:`\tilde J = \operatorname{diag}(1 - a) J`: :math:`\bar{\hat z}_t = a_t \odot
        \lambda_t`, :math:`\bar a_t = (\hat z_t - f(\tilde z_{t-1})) \odot \lambda_t`, and
        the parameter cotangents and :math:`J_t^\top` act on :math:`(1 - a_t) \odot
        \lambda_t` (:meth:`bptt`'s loop, one more O(M L) pass per step for f).

        Returns ``(params_bar, h0_bar, inputs_bar, zhat_bar, a_bar)`` in the shapes of the
        arguments (as :meth:`Model.bptt`), computed in the dtype of ``states``; non-NumPy
        arrays take the generic method of the forced model.
        """
        flat = _bptt_forced_arrays(self, h0, inputs, zhat, a, states, g)
        if flat is None or not isinstance(self.params["a"], np.ndarray):
            return _generic_bptt_forced(self, h0, inputs, zhat, a, states, g)
        H0, _, S, G, Z, A, lead = flat
        pb, h0_bar, zb, ab = self._bptt(H0, S, G, Z, A)
        return _bptt_forced_result(pb, h0_bar, None, zb, ab, lead, h0, inputs, zhat, a)

    def _bptt(
        self, H0: np.ndarray, S: np.ndarray, G: np.ndarray, Z: Any, A: Any, lam: Any = None
    ) -> tuple[Params, np.ndarray, Any, Any]:
        """The compiled BPTT loop on flat arrays: ``(params_bar, h0_bar, zhat_bar, a_bar)``;
        with ``lam`` (and ``Z`` None) the loss is on the predictions (see
        :func:`~pitsolve.models._plrnn_numba.shplrnn_bptt`)."""
        dt = S.dtype
        M, L = self.state_dim, self.hidden_dim
        a, W1, W2T, h1, h2 = self._nb_dtype(dt)
        ga, gh1, gh2 = np.zeros(M, dt), np.zeros(M, dt), np.zeros(L, dt)
        gw1, gw2t = np.zeros((M, L), dt), np.zeros((M, L), dt)
        h0_bar = np.zeros_like(H0)
        zb = _empty_like(Z)
        ab = None if Z is None else _empty_like(A)
        _plrnn_numba.shplrnn_bptt(
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
    The model has no inputs: ``x`` is ignored. On NumPy arrays in the parameters' dtype, ``f``
    and every derivative run in compiled Numba kernels, parallel over the rows of all leading
    axes (``jvp``/``vjp_h`` matrix-free, O(M L) per row; ``vjp_params`` summed in one pass);
    other arrays (CuPy, mixed precision, broadcast shapes) take the array-namespace code. Both
    evaluate the same formulas with the same convention :math:`\operatorname{relu}'(0) = 0`.
    ``sequential`` is a compiled loop over t.
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


class ALRNN(_PredictionLoops, Model):
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

    @property
    def latent_dim(self) -> int:
        """M, the latent (state) dimension."""
        return self.state_dim

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
    def f(self, h: Any, x: Any = None) -> Any:
        r""":math:`f(z) = a \odot z + W \Phi(z) + h` (``x`` is ignored). Shape ``(..., M)``."""
        return self._f_from(h, self._phi(h))

    def jacobian(self, h: Any, x: Any = None) -> Any:
        r""":math:`J = \operatorname{diag}(a) + W \operatorname{diag}(\Phi'(z))`, ``(…, M, M)``."""
        return self._J_from(self._dphi(h))

    def f_and_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        """:math:`f` and :math:`J` together."""
        return self._f_from(h, self._phi(h)), self._J_from(self._dphi(h))

    def diagonal_jacobian(self, h: Any, x: Any = None) -> Any:
        r""":math:`\operatorname{diag} J = a + \operatorname{diag}(W) \odot \Phi'(z)`."""
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

    def sequential(self, h0: Any, inputs: Any, T: int) -> Any:
        """The trajectory ``(..., T, M)`` from ``h0 (..., M)``, stepped by a compiled loop.

        Computes in the dtype of ``h0`` (the parameters are cast to it) and returns that dtype.
        Non-NumPy arrays fall back to the generic loop of :class:`Model`.
        """
        if not _numpy_float(h0, self.state_dim) or not isinstance(self.params["a"], np.ndarray):
            return super().sequential(h0, inputs, T)
        return self._sequential(h0, int(T), None, None)

    def sequential_forced(self, h0: Any, inputs: Any, zhat: Any, a: Any, T: int) -> Any:
        r"""The forced trajectory :math:`\tilde z_t = (1 - a_t) \odot f(\tilde z_{t-1})
        + a_t \odot \hat z_t` ``(..., T, M)`` by the compiled loop (see
        :meth:`ShPLRNN.sequential_forced <pitsolve.models.ShPLRNN.sequential_forced>`)."""
        if (
            not _numpy_float(h0, self.state_dim)
            or not isinstance(self.params["a"], np.ndarray)
            or not isinstance(zhat, np.ndarray)
            or not isinstance(a, np.ndarray)
        ):
            return _generic_sequential_forced(self, h0, inputs, zhat, a, T)
        T = int(T)
        h0, _, Z, A, _ = _forced_setup(self, h0, None, zhat, a, T)
        return self._sequential(h0, T, Z, A)

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
            _plrnn_numba.alrnn_sequential(a, WT, h, self.relu_units, h0f, Z, A, out, pred)
        return (out if pred is None else pred).reshape(*batch, T, M)

    def bptt(self, h0: Any, inputs: Any, states: Any, g: Any) -> tuple[Params, Any, Any]:
        r"""Backpropagation through time (see :meth:`Model.bptt`), a compiled backward loop.

        One pass over the rows of W per step gives :math:`W^\top \lambda_t` and
        :math:`\bar W \mathrel{+}= \lambda_t \Phi(z_{t-1})^\top`. Computes in the dtype of
        ``states``; non-NumPy arrays take the generic method. ``inputs`` is ignored.
        """
        flat = _bptt_arrays(self, h0, inputs, states, g)
        if flat is None or not isinstance(self.params["a"], np.ndarray):
            return super().bptt(h0, inputs, states, g)
        H0, _, S, G, lead = flat
        pb, h0_bar, _, _ = self._bptt(H0, S, G, None, None)
        return _bptt_result(pb, h0_bar, None, lead, h0, inputs)

    def bptt_forced(
        self, h0: Any, inputs: Any, zhat: Any, a: Any, states: Any, g: Any
    ) -> tuple[Params, Any, Any, Any, Any]:
        r"""BPTT of the forced recurrence, compiled: ``(params_bar, h0_bar, inputs_bar,
        zhat_bar, a_bar)`` (see :meth:`ShPLRNN.bptt_forced
        <pitsolve.models.ShPLRNN.bptt_forced>`)."""
        flat = _bptt_forced_arrays(self, h0, inputs, zhat, a, states, g)
        if flat is None or not isinstance(self.params["a"], np.ndarray):
            return _generic_bptt_forced(self, h0, inputs, zhat, a, states, g)
        H0, _, S, G, Z, A, lead = flat
        pb, h0_bar, zb, ab = self._bptt(H0, S, G, Z, A)
        return _bptt_forced_result(pb, h0_bar, None, zb, ab, lead, h0, inputs, zhat, a)

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
        zb = _empty_like(Z)
        ab = None if Z is None else _empty_like(A)
        _plrnn_numba.alrnn_bptt(
            a, W, h, self.relu_units, H0, S, G, Z, A, ga, gw, gh, h0_bar, zb, ab, lam
        )
        return Params(a=ga, W=gw, h=gh), h0_bar, zb, ab
