r"""One explicit Runge–Kutta (RK4) step of an autonomous ODE as a recurrence.

For a vector field :math:`\dot h = g(h; \theta)` and step :math:`\Delta t`,

.. math::

    k_1 &= g(h), & k_2 &= g(h + \tfrac{\Delta t}{2} k_1), &
    k_3 &= g(h + \tfrac{\Delta t}{2} k_2), & k_4 &= g(h + \Delta t\, k_3), \\
    \Psi_{\Delta t}(h) &= h + \tfrac{\Delta t}{6}(k_1 + 2 k_2 + 2 k_3 + k_4),

and the recurrence :math:`h_t = \Psi_{\Delta t}(h_{t-1})` makes DEER a parallel-in-time ODE
integrator. Every derivative of :math:`\Psi` is the chain rule through the four stages, built
from the field's own derivatives only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._arrays import array_namespace
from .._validation import check_positive_int
from . import _ode_numba
from ._shared import _arrays, _compute_dtype
from .base import Model, Parametrized, Params

__all__ = ["Lorenz63", "ODEStep", "VectorField"]


class VectorField(Parametrized):
    r"""Base class of autonomous vector fields :math:`g(h; \theta)` used by :class:`ODEStep`.

    Subclasses implement ``g``, ``jacobian`` (:math:`G = \partial g/\partial h`, dense
    ``(..., D, D)``) and ``vjp_params``; ``jvp`` (:math:`G v`) and ``vjp_h``
    (:math:`G^\top u`) default to forms built from ``jacobian`` and are worth overriding with
    matrix-free ones. All methods take arrays with any leading axes, state last, and are written
    against the array namespace of ``h`` (NumPy or CuPy).

    Parameters
    ----------
    params : the parameters :math:`\theta` (a :class:`Params` or a mapping of arrays).
    state_dim : D, if the field has a fixed dimension.
    """

    def __init__(self, params: Params | Any, *, state_dim: int | None = None):
        self._params = params if isinstance(params, Params) else Params(params)
        self.state_dim = None if state_dim is None else check_positive_int(state_dim, "state_dim")
        self._derived: dict[str, Any] = {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(state_dim={self.state_dim})"

    def g(self, h: Any) -> Any:  # pragma: no cover - abstract
        r""":math:`g(h)`, shape ``(..., D)``."""
        raise NotImplementedError

    def jacobian(self, h: Any) -> Any:  # pragma: no cover - abstract
        r""":math:`G = \partial g/\partial h`, shape ``(..., D, D)``."""
        raise NotImplementedError

    def jvp(self, h: Any, v: Any) -> Any:
        r""":math:`G v` (default: from ``jacobian``)."""
        G = self.jacobian(h)
        return array_namespace(G).matmul(G, v[..., None])[..., 0]

    def vjp_h(self, h: Any, u: Any) -> Any:
        r""":math:`G^\top u` (default: from ``jacobian``)."""
        G = self.jacobian(h)
        return array_namespace(G).matmul(u[..., None, :], G)[..., 0, :]

    def vjp_params(self, h: Any, u: Any) -> Params:  # pragma: no cover - abstract
        r""":math:`\sum_{\ldots} (\partial g/\partial\theta)^\top u` over all leading axes."""
        raise NotImplementedError

    def _rk4_sequential(self, h0: np.ndarray, T: int, dt: float) -> np.ndarray | None:
        """A compiled RK4 loop ``(B, D) -> (B, T, D)``, or None where the field has none."""
        return None

    def _rk4_bptt(
        self, h0: np.ndarray, states: np.ndarray, g: np.ndarray, dt: float
    ) -> tuple[Params, np.ndarray] | None:
        """A compiled BPTT loop of the RK4 step: ``(params_bar, h0_bar (B, D))`` from ``h0``
        ``(B, D)``, ``states`` and ``g`` ``(B, T, D)``, or None where the field has none."""
        return None


class Lorenz63(VectorField):
    r"""The Lorenz-63 system :math:`g(h) = (\sigma(y - x),\ x(\rho - z) - y,\ xy - \beta z)`.

    .. math::

        G = \begin{pmatrix} -\sigma & \sigma & 0 \\ \rho - z & -1 & -x \\ y & x & -\beta
            \end{pmatrix}, \qquad
        \frac{\partial g}{\partial(\sigma, \rho, \beta)} =
            \begin{pmatrix} y - x & 0 & 0 \\ 0 & x & 0 \\ 0 & 0 & -z \end{pmatrix}.

    Parameters
    ----------
    sigma, rho, beta : the parameters (0-d arrays ``"sigma"``, ``"rho"``, ``"beta"``).
    dtype : float32 or float64.
    """

    def __init__(
        self,
        sigma: float = 10.0,
        rho: float = 28.0,
        beta: float = 8.0 / 3.0,
        *,
        dtype: Any = np.float64,
    ):
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
        arrays = {}
        for name, value in (("sigma", sigma), ("rho", rho), ("beta", beta)):
            a = np.asarray(value, dtype=dt)
            if a.shape != ():
                raise ValueError(f"{name} must be a scalar, got shape {a.shape}")
            arrays[name] = a
        super().__init__(Params(arrays), state_dim=3)

    def _p(self, *arrays: Any) -> tuple[Any, Any, Any, Any]:
        xp = array_namespace(*arrays)
        p = _arrays(self, xp, _compute_dtype(*arrays))
        return xp, p["sigma"], p["rho"], p["beta"]

    def g(self, h: Any) -> Any:
        r""":math:`(\sigma(y - x),\ x(\rho - z) - y,\ xy - \beta z)`."""
        xp, s, r, b = self._p(h)
        x, y, z = h[..., 0], h[..., 1], h[..., 2]
        return xp.stack([s * (y - x), x * (r - z) - y, x * y - b * z], axis=-1)

    def jacobian(self, h: Any) -> Any:
        r"""The dense :math:`G(h)`, shape ``(..., 3, 3)``."""
        xp, s, r, b = self._p(h)
        x, y, z = h[..., 0], h[..., 1], h[..., 2]
        G = xp.zeros((*h.shape, 3), dtype=h.dtype)
        G[..., 0, 0] = -s
        G[..., 0, 1] = s
        G[..., 1, 0] = r - z
        G[..., 1, 1] = -1
        G[..., 1, 2] = -x
        G[..., 2, 0] = y
        G[..., 2, 1] = x
        G[..., 2, 2] = -b
        return G

    def jvp(self, h: Any, v: Any) -> Any:
        r""":math:`G v = (\sigma(v_y - v_x),\ (\rho - z) v_x - v_y - x v_z,\
        y v_x + x v_y - \beta v_z)`."""
        xp, s, r, b = self._p(h, v)
        x, y, z = h[..., 0], h[..., 1], h[..., 2]
        vx, vy, vz = v[..., 0], v[..., 1], v[..., 2]
        gv = (s * (vy - vx), (r - z) * vx - vy - x * vz, y * vx + x * vy - b * vz)
        return xp.stack(xp.broadcast_arrays(*gv), axis=-1)

    def vjp_h(self, h: Any, u: Any) -> Any:
        r""":math:`G^\top u = (-\sigma u_x + (\rho - z) u_y + y u_z,\
        \sigma u_x - u_y + x u_z,\ -x u_y - \beta u_z)`."""
        xp, s, r, b = self._p(h, u)
        x, y, z = h[..., 0], h[..., 1], h[..., 2]
        ux, uy, uz = u[..., 0], u[..., 1], u[..., 2]
        return xp.stack(
            xp.broadcast_arrays(
                -s * ux + (r - z) * uy + y * uz, s * ux - uy + x * uz, -x * uy - b * uz
            ),
            axis=-1,
        )

    def vjp_params(self, h: Any, u: Any) -> Params:
        r""":math:`\bar\sigma = \sum u_x (y - x)`, :math:`\bar\rho = \sum u_y x`,
        :math:`\bar\beta = -\sum u_z z` (over all leading axes)."""
        xp = array_namespace(h, u)
        x, y, z = h[..., 0], h[..., 1], h[..., 2]
        ux, uy, uz = u[..., 0], u[..., 1], u[..., 2]
        return Params(
            sigma=xp.sum(ux * (y - x)),
            rho=xp.sum(uy * x),
            beta=-xp.sum(uz * z),
        )

    def _rk4_sequential(self, h0: np.ndarray, T: int, dt: float) -> np.ndarray | None:
        t = h0.dtype.type
        p = _arrays(self, np, h0.dtype)
        out = np.empty((h0.shape[0], T, 3), dtype=h0.dtype)
        _ode_numba.lorenz63_rk4(
            h0,
            out,
            t(p["sigma"]),
            t(p["rho"]),
            t(p["beta"]),
            t(dt / 2),
            t(dt),
            t(dt / 6),
            t(2),
        )
        return out

    def _rk4_bptt(
        self, h0: np.ndarray, states: np.ndarray, g: np.ndarray, dt: float
    ) -> tuple[Params, np.ndarray]:
        t = states.dtype.type
        p = _arrays(self, np, states.dtype)
        grads = np.zeros(3, dtype=states.dtype)
        h0_bar = np.zeros_like(h0)
        _ode_numba.lorenz63_rk4_bptt(
            h0,
            states,
            g,
            t(p["sigma"]),
            t(p["rho"]),
            t(p["beta"]),
            t(dt / 2),
            t(dt),
            t(dt / 6),
            t(dt / 3),
            t(2),
            grads,
            h0_bar,
        )
        return Params(sigma=grads[0].copy(), rho=grads[1].copy(), beta=grads[2].copy()), h0_bar


class ODEStep(Model):
    r"""One classical RK4 step :math:`h_t = \Psi_{\Delta t}(h_{t-1})` of a vector field.

    With :math:`G_i = G(h^{(i)})` at the stage points :math:`h^{(1)} = h`,
    :math:`h^{(2)} = h + \tfrac{\Delta t}{2} k_1`, :math:`h^{(3)} = h + \tfrac{\Delta t}{2} k_2`,
    :math:`h^{(4)} = h + \Delta t\, k_3`, the Jacobian is

    .. math::

        K_1 = G_1,\ K_2 = G_2 (I + \tfrac{\Delta t}{2} K_1),\
        K_3 = G_3 (I + \tfrac{\Delta t}{2} K_2),\ K_4 = G_4 (I + \Delta t K_3), \\
        J = I + \tfrac{\Delta t}{6}(K_1 + 2 K_2 + 2 K_3 + K_4).

    ``jvp`` propagates a tangent forward through the stages (field JVPs only); ``vjp_h`` and
    ``vjp_params`` propagate a cotangent backwards through them (field VJPs only):
    :math:`\bar k_4 = \tfrac{\Delta t}{6} u`, :math:`\bar k_3 = \tfrac{\Delta t}{3} u + \Delta t\,
    G_4^\top \bar k_4`, :math:`\bar k_2 = \tfrac{\Delta t}{3} u + \tfrac{\Delta t}{2}
    G_3^\top \bar k_3`, :math:`\bar k_1 = \tfrac{\Delta t}{6} u + \tfrac{\Delta t}{2}
    G_2^\top \bar k_2`, :math:`J^\top u = u + \sum_i G_i^\top \bar k_i`,
    :math:`\bar\theta = \sum_i (\partial g/\partial\theta)(h^{(i)})^\top \bar k_i`.

    Parameters
    ----------
    field : the :class:`VectorField`; the model's parameters are the field's.
    dt : the step :math:`\Delta t > 0`.
    state_dim : D, needed only if the field has no ``state_dim``.

    Notes
    -----
    The model is autonomous (no inputs). ``sequential`` runs a compiled loop for fields that
    provide one (:class:`Lorenz63`), else a Python loop over ``f``.
    """

    def __init__(self, field: VectorField, *, dt: float, state_dim: int | None = None):
        if not isinstance(field, VectorField):
            raise TypeError(f"field must be a VectorField, got {type(field).__name__}")
        dt_ = float(dt)
        if not np.isfinite(dt_) or dt_ <= 0:
            raise ValueError(f"dt must be a positive finite number, got {dt!r}")
        D = state_dim if state_dim is not None else field.state_dim
        if D is None:
            raise ValueError("state_dim is required for a field without state_dim")
        D = check_positive_int(D, "state_dim")
        if field.state_dim is not None and field.state_dim != D:
            raise ValueError(f"state_dim={D} does not match field.state_dim={field.state_dim}")
        super().__init__(field.params, state_dim=D, input_dim=0)
        self._field = field
        self.dt = dt_

    def __repr__(self) -> str:
        return f"ODEStep({self._field!r}, dt={self.dt})"

    @property
    def field(self) -> VectorField:
        """The vector field, carrying this model's parameters."""
        if self._field.params is self.params:
            return self._field
        return self.cached("field", lambda: self._field.replace(self.params))

    @staticmethod
    def _no_inputs(x: Any) -> None:
        if x is not None and x.shape[-1] != 0:
            raise ValueError(f"ODEStep is autonomous (no inputs); got x of shape {x.shape}")

    def _stages(self, h: Any) -> tuple[list[Any], list[Any]]:
        """The stage points :math:`h^{(i)}` and slopes :math:`k_i`."""
        g, dt = self.field.g, self.dt
        k1 = g(h)
        h2 = h + (dt / 2) * k1
        k2 = g(h2)
        h3 = h + (dt / 2) * k2
        k3 = g(h3)
        h4 = h + dt * k3
        k4 = g(h4)
        return [h, h2, h3, h4], [k1, k2, k3, k4]

    @staticmethod
    def _combine(h: Any, dt: float, k: list[Any]) -> Any:
        return h + (dt / 6) * (k[0] + 2 * k[1] + 2 * k[2] + k[3])

    def f(self, h: Any, x: Any = None) -> Any:
        r""":math:`\Psi_{\Delta t}(h) = h + \tfrac{\Delta t}{6}(k_1 + 2k_2 + 2k_3 + k_4)`."""
        self._no_inputs(x)
        _, k = self._stages(h)
        return self._combine(h, self.dt, k)

    def jacobian(self, h: Any, x: Any = None) -> Any:
        r"""The dense :math:`J = \partial\Psi/\partial h`, shape ``(..., D, D)``."""
        return self.f_and_jacobian(h, x)[1]

    def f_and_jacobian(self, h: Any, x: Any = None) -> tuple[Any, Any]:
        r""":math:`\Psi` and :math:`J` by the chain rule through the stages."""
        self._no_inputs(x)
        xp = array_namespace(h)
        pts, k = self._stages(h)
        dt, G = self.dt, self.field.jacobian
        D = self.state_dim
        eye = xp.eye(D, dtype=k[0].dtype)
        K1 = G(pts[0])
        K2 = xp.matmul(G(pts[1]), eye + (dt / 2) * K1)
        K3 = xp.matmul(G(pts[2]), eye + (dt / 2) * K2)
        K4 = xp.matmul(G(pts[3]), eye + dt * K3)
        J = eye + (dt / 6) * (K1 + 2 * K2 + 2 * K3 + K4)
        return self._combine(h, dt, k), J

    def jvp(self, h: Any, x: Any, v: Any) -> Any:
        r""":math:`J v`: :math:`\dot k_1 = G_1 v`, :math:`\dot k_2 = G_2 (v + \tfrac{\Delta t}{2}
        \dot k_1)`, :math:`\dot k_3 = G_3 (v + \tfrac{\Delta t}{2} \dot k_2)`,
        :math:`\dot k_4 = G_4 (v + \Delta t\, \dot k_3)`,
        :math:`J v = v + \tfrac{\Delta t}{6}(\dot k_1 + 2\dot k_2 + 2\dot k_3 + \dot k_4)`."""
        self._no_inputs(x)
        pts, _ = self._stages(h)
        dt, jvp = self.dt, self.field.jvp
        t1 = jvp(pts[0], v)
        t2 = jvp(pts[1], v + (dt / 2) * t1)
        t3 = jvp(pts[2], v + (dt / 2) * t2)
        t4 = jvp(pts[3], v + dt * t3)
        return self._combine(v, dt, [t1, t2, t3, t4])

    def _reverse(self, h: Any, u: Any) -> tuple[list[Any], list[Any], list[Any]]:
        r"""Stage points, stage cotangents :math:`\bar k_i`, and :math:`G_i^\top \bar k_i`."""
        pts, _ = self._stages(h)
        dt, vjp = self.dt, self.field.vjp_h
        kb4 = (dt / 6) * u
        a4 = vjp(pts[3], kb4)
        kb3 = (dt / 3) * u + dt * a4
        a3 = vjp(pts[2], kb3)
        kb2 = (dt / 3) * u + (dt / 2) * a3
        a2 = vjp(pts[1], kb2)
        kb1 = (dt / 6) * u + (dt / 2) * a2
        a1 = vjp(pts[0], kb1)
        return pts, [kb1, kb2, kb3, kb4], [a1, a2, a3, a4]

    def vjp_h(self, h: Any, x: Any, u: Any) -> Any:
        r""":math:`J^\top u = u + \sum_i G_i^\top \bar k_i` (see the class docstring)."""
        self._no_inputs(x)
        _, _, a = self._reverse(h, u)
        return u + ((a[0] + a[1]) + (a[2] + a[3]))

    def vjp_params(self, h: Any, x: Any, u: Any) -> Params:
        r""":math:`\sum_{\ldots} \sum_i (\partial g/\partial\theta)(h^{(i)})^\top \bar k_i`."""
        self._no_inputs(x)
        pts, kb, _ = self._reverse(h, u)
        vjp = self.field.vjp_params
        total = vjp(pts[0], kb[0])
        for p, k in zip(pts[1:], kb[1:], strict=True):
            total = total.map(lambda a, b: a + b, vjp(p, k))
        return total

    # -- compiled loops (the hooks of pitsolve.models._loops) ---------------------------------
    def _loop(self, H0: np.ndarray, X: Any, Z: Any, A: Any, T: int) -> np.ndarray | None:
        """The compiled RK4 loop of fields that provide one (:class:`Lorenz63`), else None."""
        self._no_inputs(X)
        if Z is not None:
            return None
        return self.field._rk4_sequential(H0, T, self.dt)

    def _loop_bptt(self, H0: np.ndarray, X: Any, S: np.ndarray, G: np.ndarray, Z: Any,
                   A: Any) -> tuple[Params, np.ndarray, Any, None, None] | None:
        r"""The compiled backward loop of fields that provide one (:class:`Lorenz63`: the
        stages recomputed from :math:`h_{t-1}`, the cotangent taken back through them as in
        :meth:`vjp_h`), else None."""
        self._no_inputs(X)
        if Z is not None:
            return None
        res = self.field._rk4_bptt(H0, S, G, self.dt)
        if res is None:
            return None
        return res[0], res[1], None, None, None
