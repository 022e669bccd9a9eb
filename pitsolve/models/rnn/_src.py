r"""Classic recurrent networks with hand-derived derivatives: Elman and GRU.

Both are written against the array namespace of the state (NumPy or CuPy), batched over any
leading axes, and compute in the floating dtype of their array arguments (parameters are cast
once per dtype and cached). ``sequential`` runs a compiled Numba loop on NumPy arrays.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from .._validation import check_positive_int
from ..backends import array_namespace
from ._shared import (
    _arrays,
    _bptt_arrays,
    _bptt_forced_arrays,
    _bptt_forced_result,
    _bptt_result,
    _check_dtype,
    _check_inputs_count,
    _check_x,
    _compute_dtype,
    _derived,
    _empty_like,
    _forced_setup,
    _generic_bptt_forced,
    _generic_sequential_forced,
    _given_params,
    _lead_sum,
    _outer_sum,
    _sequential_setup,
    _sigmoid,
)
from .base import Linearization, Model, Params

__all__ = ["GRU", "Elman"]


# -- Elman -------------------------------------------------------------------------------------


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

    # pre-activation and output
    def _out(self, h: Any, x: Any) -> tuple[Any, Any, dict[str, Any]]:
        xp = array_namespace(h, x)
        x = _check_x(self, x)
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

    def f_and_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        r""":math:`f` and :math:`J = \operatorname{diag}(1 - f^2)\, W` from one evaluation."""
        _, y, p = self._out(h, x)
        return y, (1 - y * y)[..., :, None] * p["W"]

    def diagonal_jacobian(self, h: Any, x: Any = None) -> Any:
        r""":math:`\operatorname{diag} J = (1 - f^2) \odot \operatorname{diag} W`."""
        return self.f_and_diagonal_jacobian(h, x)[1]

    def f_and_diagonal_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        r""":math:`f` and :math:`(1 - f^2) \odot \operatorname{diag} W`."""
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
        x = _check_x(self, x)
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

    def sequential(self, h0: Any, inputs: Any, T: int) -> Any:
        """The trajectory ``(..., T, D)``; a compiled loop on NumPy arrays (dtype of ``h0``)."""
        xp = array_namespace(h0, inputs)
        if xp is not np:
            return super().sequential(h0, inputs, T)
        return self._sequential(h0, inputs, T, None, None)

    def sequential_forced(self, h0: Any, inputs: Any, zhat: Any, a: Any, T: int) -> Any:
        r"""The forced trajectory :math:`\tilde h_t = (1 - a_t) \odot f(\tilde h_{t-1}, x_t)
        + a_t \odot \hat z_t`, ``(..., T, D)``, by the compiled loop of :meth:`sequential`
        (the model of :class:`~pitsolve.training.forcing.ForcedModel`).

        ``zhat`` and ``a`` are ``(..., T' ≥ T, D)``; all batch axes broadcast. Computes in the
        dtype of ``h0``; non-NumPy arrays take a Python loop of the forced step.
        """
        if array_namespace(h0, inputs, zhat, a) is not np:
            return _generic_sequential_forced(self, h0, inputs, zhat, a, T)
        T = check_positive_int(T, "T")
        h0, inputs, Z, A, _ = _forced_setup(self, h0, inputs, zhat, a, T)
        return self._sequential(h0, inputs, T, Z, A)

    def _sequential(self, h0: Any, inputs: Any, T: int, Z: Any, A: Any) -> np.ndarray:
        """The compiled loop, forced by ``Z``, ``A`` ``(B, T, D)`` unless they are None."""
        from . import _rnn_numba

        H0, X, lead = _sequential_setup(self, h0, inputs, T)
        p = _arrays(self, np, H0.dtype)
        WT = _derived(self, "WT", np, H0.dtype, lambda q: np.ascontiguousarray(q["W"].T))
        out = np.empty((H0.shape[0], T, self.state_dim), dtype=H0.dtype)
        if X is None:
            out[...] = p["b"]
        else:
            np.matmul(X, p["U"].T, out=out)
            out += p["b"]
        _rnn_numba.elman_loop(WT, H0, Z, A, out)
        return out.reshape(*lead, T, self.state_dim)

    def bptt(self, h0: Any, inputs: Any, states: Any, g: Any) -> tuple[Params, Any, Any]:
        r"""Backpropagation through time (see :meth:`Model.bptt`), a compiled backward loop.

        Per step the output :math:`y_t = \tanh(W h_{t-1} + U x_t + b)` is recomputed from the
        stored :math:`h_{t-1}` (one pass over W, as in the forward loop), then with
        :math:`\gamma_t = (1 - y_t^2) \odot \lambda_t` one pass over W gives
        :math:`J_t^\top \lambda_t = W^\top \gamma_t`; the outer products
        :math:`\gamma_t h_{t-1}^\top` are added to :math:`\bar W` eight steps at a time.
        Setting ``_bptt_recompute = False`` on an instance reads :math:`y_t = h_t` from
        ``states`` instead (a step then costs less than a forward step; the two agree to
        rounding when ``states`` is the trajectory, and only then). Computes in the dtype of
        ``states``; non-NumPy arrays take the generic method.
        """
        flat = _bptt_arrays(self, h0, inputs, states, g)
        if flat is None:
            return super().bptt(h0, inputs, states, g)
        H0, X, S, G, lead = flat
        pb, h0_bar, x_bar, _, _ = self._bptt(H0, X, S, G, None, None)
        return _bptt_result(pb, h0_bar, x_bar, lead, h0, inputs)

    def bptt_forced(
        self, h0: Any, inputs: Any, zhat: Any, a: Any, states: Any, g: Any
    ) -> tuple[Params, Any, Any, Any, Any]:
        r"""BPTT of the forced recurrence (see :meth:`sequential_forced`), compiled.

        With :math:`\lambda_t = g_t + \tilde J_{t+1}^\top \lambda_{t+1}`,
        :math:`\tilde J = \operatorname{diag}(1 - a) J`: :math:`\bar{\hat z}_t = a_t \odot
        \lambda_t`, :math:`\bar a_t = (\hat z_t - y_t) \odot \lambda_t` (:math:`y_t` the
        recomputed output) and :meth:`bptt`'s loop on :math:`(1 - a_t) \odot \lambda_t`.

        Returns ``(params_bar, h0_bar, inputs_bar, zhat_bar, a_bar)`` in the shapes of the
        arguments, computed in the dtype of ``states``; non-NumPy arrays take the generic
        method of the forced model.
        """
        flat = _bptt_forced_arrays(self, h0, inputs, zhat, a, states, g)
        if flat is None:
            return _generic_bptt_forced(self, h0, inputs, zhat, a, states, g)
        H0, X, S, G, Z, A, lead = flat
        pb, h0_bar, x_bar, zb, ab = self._bptt(H0, X, S, G, Z, A)
        return _bptt_forced_result(pb, h0_bar, x_bar, zb, ab, lead, h0, inputs, zhat, a)

    def _bptt(
        self, H0: np.ndarray, X: Any, S: np.ndarray, G: np.ndarray, Z: Any, A: Any
    ) -> tuple[Params, np.ndarray, np.ndarray, Any, Any]:
        """The compiled loop on flat arrays: ``(params_bar, h0_bar, x_bar, zhat_bar, a_bar)``."""
        _check_x(self, X)
        from . import _rnn_numba

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
        zb, ab = _empty_like(Z), _empty_like(A)
        recompute = self._bptt_recompute or Z is not None  # forced states aren't outputs
        _rnn_numba.elman_bptt(
            WT, W, UT, U, p["b"], H0, Xk, S, G, recompute, Z, A,
            gw, gu, gb, h0_bar, x_bar, zb, ab,
        )  # fmt: skip
        return Params(W=gw, U=gu, b=gb), h0_bar, x_bar, zb, ab


# -- GRU ---------------------------------------------------------------------------------------


class _GRUGates(NamedTuple):
    xp: Any
    p: dict[str, Any]  # the parameters
    s: dict[str, Any]  # stacked parameters: Wzr = [Wz; Wr], U = [Uz; Ur; Un], b = [bz; br; bn]
    z: Any
    r: Any
    n: Any


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
        x = _check_x(self, x)
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

    def f_and_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        """f and its dense Jacobian from one evaluation of the gates."""
        xp, p, _, z, r, n = self._gates(h, x)
        D = self.state_dim
        dh = h - n
        az = dh * z * (1 - z)
        an = (1 - z) * (1 - n * n)
        c = h * r * (1 - r)
        lead = np.broadcast_shapes(az.shape[:-1], c.shape[:-1])
        Wn = p["Wn"]
        # Wn diag(c) Wr for every step at once: one (… D, D) @ (D, D) product
        WnC = xp.broadcast_to(Wn * c[..., None, :], (*lead, D, D))
        M = xp.matmul(WnC.reshape(-1, D), p["Wr"]).reshape(*lead, D, D)
        J = az[..., :, None] * p["Wz"] + an[..., :, None] * (Wn * r[..., None, :] + M)
        idx = xp.arange(D)
        J[..., idx, idx] += z
        return n + z * dh, J

    def diagonal_jacobian(self, h: Any, x: Any = None) -> Any:
        r""":math:`\operatorname{diag} J = z + a_z \odot \operatorname{diag} W_z
        + a_n \odot (r \odot \operatorname{diag} W_n + Q c)` with
        :math:`Q_{ij} = (W_n)_{ij} (W_r)_{ji}`; O(D²) per step."""
        return self.f_and_diagonal_jacobian(h, x)[1]

    def f_and_diagonal_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        """f and the diagonal of its Jacobian."""
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
        x = _check_x(self, x)
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

    def sequential(self, h0: Any, inputs: Any, T: int) -> Any:
        """The trajectory ``(..., T, D)``; a compiled loop on NumPy arrays (dtype of ``h0``)."""
        xp = array_namespace(h0, inputs)
        if xp is not np:
            return super().sequential(h0, inputs, T)
        return self._sequential(h0, inputs, T, None, None)

    def sequential_forced(self, h0: Any, inputs: Any, zhat: Any, a: Any, T: int) -> Any:
        r"""The forced trajectory :math:`\tilde h_t = (1 - a_t) \odot f(\tilde h_{t-1}, x_t)
        + a_t \odot \hat z_t` ``(..., T, D)`` by the compiled loop (see
        :meth:`Elman.sequential_forced`)."""
        if array_namespace(h0, inputs, zhat, a) is not np:
            return _generic_sequential_forced(self, h0, inputs, zhat, a, T)
        T = check_positive_int(T, "T")
        h0, inputs, Z, A, _ = _forced_setup(self, h0, inputs, zhat, a, T)
        return self._sequential(h0, inputs, T, Z, A)

    def _sequential(self, h0: Any, inputs: Any, T: int, Z: Any, A: Any) -> np.ndarray:
        """The compiled loop, forced by ``Z``, ``A`` ``(B, T, D)`` unless they are None."""
        from . import _rnn_numba

        H0, X, lead = _sequential_setup(self, h0, inputs, T)
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
        return out.reshape(*lead, T, self.state_dim)

    def bptt(self, h0: Any, inputs: Any, states: Any, g: Any) -> tuple[Params, Any, Any]:
        r"""Backpropagation through time (see :meth:`Model.bptt`), a compiled backward loop.

        Per step the gates are recomputed from :math:`h_{t-1}` as the forward loop forms them
        (input projections for all t by one BLAS product first), then the cotangents of the
        three pre-activations give every parameter cotangent and :math:`J_t^\top \lambda_t`:
        passes over :math:`W_{zr}, W_n` (recompute) and :math:`W_n, W_{zr}` (transposed
        products); the weight cotangents take their outer products eight steps at a time.
        Computes in the dtype of ``states``; non-NumPy arrays take the generic method.
        """
        flat = _bptt_arrays(self, h0, inputs, states, g)
        if flat is None:
            return super().bptt(h0, inputs, states, g)
        H0, X, S, G, lead = flat
        pb, h0_bar, x_bar, _, _ = self._bptt(H0, X, S, G, None, None)
        return _bptt_result(pb, h0_bar, x_bar, lead, h0, inputs)

    def bptt_forced(
        self, h0: Any, inputs: Any, zhat: Any, a: Any, states: Any, g: Any
    ) -> tuple[Params, Any, Any, Any, Any]:
        r"""BPTT of the forced recurrence, compiled: ``(params_bar, h0_bar, inputs_bar,
        zhat_bar, a_bar)`` (see :meth:`Elman.bptt_forced`)."""
        flat = _bptt_forced_arrays(self, h0, inputs, zhat, a, states, g)
        if flat is None:
            return _generic_bptt_forced(self, h0, inputs, zhat, a, states, g)
        H0, X, S, G, Z, A, lead = flat
        pb, h0_bar, x_bar, zb, ab = self._bptt(H0, X, S, G, Z, A)
        return _bptt_forced_result(pb, h0_bar, x_bar, zb, ab, lead, h0, inputs, zhat, a)

    def _bptt(
        self, H0: np.ndarray, X: Any, S: np.ndarray, G: np.ndarray, Z: Any, A: Any
    ) -> tuple[Params, np.ndarray, np.ndarray, Any, Any]:
        """The compiled loop on flat arrays: ``(params_bar, h0_bar, x_bar, zhat_bar, a_bar)``."""
        _check_x(self, X)
        from . import _rnn_numba

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
        zb, ab = _empty_like(Z), _empty_like(A)
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
