r"""Maximal Lyapunov exponents :math:`\lambda_{\max}` (and the first k) by the Benettin/QR
iteration (MATH.md §9).

================================  ======================================================
function                          computes
================================  ======================================================
:func:`max_lyapunov`              :math:`\lambda_{\max}` of a model (Benettin/QR)
:func:`max_lyapunov_flow`         :math:`\lambda_{\max}` of an ODE (RK4 variational equations)
================================  ======================================================

A trajectory that leaves the floating-point range gives NaN exponents, never an exception;
malformed arguments raise ``ValueError`` naming the argument. Everything runs on NumPy (CuPy
inputs are copied to the host).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .._validation import as_float_array, check_positive_int
from ._inputs import CHUNK_ELEMENTS, autonomous, host, positive_float

__all__ = ["LyapunovResult", "max_lyapunov", "max_lyapunov_flow"]


def _nonneg_int(v: Any, name: str) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(v).__name__} {v!r}")
    if v < 0:
        raise ValueError(f"{name} must be ≥ 0, got {v}")
    return int(v)


@dataclass(frozen=True)
class LyapunovResult:
    """Lyapunov exponents from a Benettin/QR iteration.

    Attributes
    ----------
    per_step : :math:`\\lambda_{\\max}` per step of the map (NaN if the trajectory diverged).
    per_time : ``per_step / dt``, or None without a time step.
    trajectory_finite : False if the trajectory left the floating-point range.
    exponents : the first k exponents per step, ``(k,)``, in decreasing order of growth
        (``exponents[0] == per_step``).
    """

    per_step: float
    per_time: float | None
    trajectory_finite: bool
    exponents: np.ndarray = field(repr=False)


class _Tangents:
    r"""k tangent vectors :math:`V \leftarrow J V`, re-orthonormalised every r steps by
    :math:`V = QR`, accumulating :math:`\sum \log|R_{ii}|` after the transient."""

    def __init__(self, V: np.ndarray, transient: int, total: int, every: int):
        self.V = V
        self.logs = np.zeros(V.shape[1])
        self.transient, self.total, self.every = transient, total, every
        self.step = 0

    def advance(self, V: np.ndarray) -> None:
        """Record the propagated tangents of the next step."""
        self.step += 1
        s = self.step
        if s % self.every and s != self.transient and s != self.total:
            self.V = V
            return
        r = np.array([np.linalg.norm(V)]) if V.shape[1] == 1 else None
        if r is not None and r[0] > 0:
            Q = V / r[0]
        else:
            # a zero growth factor leaves Q orthonormal (log 0 = −∞ is then recorded)
            Q, R = np.linalg.qr(V)
            d = np.diagonal(R)
            r = np.abs(d)
            Q = Q * np.where(d < 0, -1.0, 1.0)
        if s > self.transient:
            with np.errstate(divide="ignore"):
                self.logs += np.log(r)
        self.V = Q

    def result(self, T: int, dt: float | None, finite: bool) -> LyapunovResult:
        ex = self.logs / T if finite else np.full(self.logs.shape, math.nan)
        lam = float(ex[0])
        return LyapunovResult(lam, None if dt is None else lam / dt, finite, ex)


def _initial_tangents(rng: np.random.Generator, D: int, k: int) -> np.ndarray:
    Q, _ = np.linalg.qr(rng.standard_normal((D, k)))
    return Q


def _check_lyapunov_args(
    T: Any, transient: Any, renormalise_every: Any, k: Any, D: int
) -> tuple[int, int, int, int]:
    T = check_positive_int(T, "T")
    transient = _nonneg_int(transient, "transient")
    every = check_positive_int(renormalise_every, "renormalise_every")
    k = check_positive_int(k, "k")
    if k > D:
        raise ValueError(f"k must be at most the state dimension {D}, got {k}")
    return T, transient, every, k


def max_lyapunov(
    model: Any,
    h0: Any = None,
    *,
    T: int = 10_000,
    transient: int = 1_000,
    dt: float | None = None,
    renormalise_every: int = 1,
    seed: int = 0,
    k: int = 1,
) -> LyapunovResult:
    r""":math:`\lambda_i = \frac1T \sum_{t} \log |R_t|_{ii}` with
    :math:`J_t V_{t-1} = V_t R_t` (QR), :math:`J_t = \partial f/\partial h\,(h_{t-1})`.

    The Benettin/QR iteration with the model's analytic Jacobian: the trajectory
    :math:`h_t = f(h_{t-1})` (``model.sequential``) and k orthonormal tangent vectors are
    iterated ``transient + T`` steps; the tangents are re-orthonormalised every
    ``renormalise_every`` steps (and at the ends of the transient and of the run), and the
    logarithms of the growth factors are accumulated over the last T steps only, the
    transient serving to reach the attractor and align the tangents. For k = 1 the QR is a
    normalisation, :math:`v \leftarrow Jv/\lVert Jv\rVert`. Jacobians are evaluated in
    batches along the stored trajectory (dense ``(..., D, D)`` or diagonal ``(..., D)``,
    per ``model.jacobian_structure``); the tangents are propagated in float64.

    Parameters
    ----------
    model : an autonomous model (``f``, ``jacobian``, ``sequential``, ``state_dim``).
    h0 : ``(D,)`` initial state (default: ``rng.standard_normal(D)``).
    T : steps averaged over.
    transient : steps discarded first.
    dt : the time step of the map, for ``per_time``; default ``model.dt`` where the model
        has one (:class:`~pitsolve.models.ODEStep`), else None.
    renormalise_every : steps between re-orthonormalisations.
    seed : seed of ``numpy.random.default_rng`` for ``h0`` (if not given) and then the
        initial tangents (the Q of a standard normal ``(D, k)`` matrix).
    k : how many exponents, 1 ≤ k ≤ D.

    Returns
    -------
    :class:`LyapunovResult`; a trajectory that leaves the floating-point range gives
    ``trajectory_finite=False`` and NaN exponents (no exception).
    """
    D = autonomous(model)
    T, transient, every, k = _check_lyapunov_args(T, transient, renormalise_every, k, D)
    dt = getattr(model, "dt", None) if dt is None else dt
    dt = None if dt is None else positive_float(dt, "dt")
    rng = np.random.default_rng(seed)
    dtype = np.dtype(getattr(model, "dtype", np.float64))
    if h0 is None:
        h0 = rng.standard_normal(D).astype(dtype)
    else:
        h0 = np.asarray(as_float_array(host(h0), "h0")).astype(dtype)
        if h0.shape != (D,):
            raise ValueError(f"h0 must have shape ({D},), got {h0.shape}")
        if not np.isfinite(h0).all():
            raise ValueError("h0 contains non-finite values (NaN or Inf)")
    tan = _Tangents(_initial_tangents(rng, D, k), transient, transient + T, every)
    with np.errstate(all="ignore"):
        traj = np.asarray(host(model.sequential(h0[None], None, transient + T)))[0]
    if not np.isfinite(traj).all():
        return tan.result(T, dt, finite=False)
    states = np.concatenate([h0[None], traj[:-1]])  # J_t is taken at h_{t-1}
    diagonal = getattr(model, "jacobian_structure", "dense") == "diagonal"
    chunk = max(1, CHUNK_ELEMENTS // (D if diagonal else D * D))
    for start in range(0, states.shape[0], chunk):
        with np.errstate(all="ignore"):
            J = np.asarray(host(model.jacobian(states[start : start + chunk])), np.float64)
        if not np.isfinite(J).all():
            return tan.result(T, dt, finite=False)
        for Jt in J:
            tan.advance(Jt[:, None] * tan.V if diagonal else Jt @ tan.V)
    return tan.result(T, dt, finite=True)


def max_lyapunov_flow(
    vector_field: Callable[[np.ndarray], np.ndarray] | Any,
    jacobian: Callable[[np.ndarray], np.ndarray] | None,
    x0: Any,
    dt: float,
    T: int = 10_000,
    transient: int = 1_000,
    *,
    renormalise_every: int = 1,
    seed: int = 0,
    k: int = 1,
) -> LyapunovResult:
    r""":math:`\lambda_i = \frac{1}{T\Delta t}\sum_t \log|R_t|_{ii}` for the flow of
    :math:`\dot x = g(x)` with the variational equations :math:`\dot V = G(x) V`.

    The pair :math:`(x, V)` is integrated with classical RK4 at the fixed step
    :math:`\Delta t` = ``dt`` for ``transient + T`` steps; V (k orthonormal columns) is
    re-orthonormalised by QR every ``renormalise_every`` steps and the logarithms of the
    growth factors are accumulated over the last T steps. (RK4 of the variational equations
    is the exact linearisation of the RK4 map, so this equals :func:`max_lyapunov` of
    ``ODEStep(field, dt)`` from the same state.)

    Parameters
    ----------
    vector_field : :math:`g`, a callable ``(D,) -> (D,)``, or an object with methods ``g``
        and ``jacobian`` (a :class:`~pitsolve.models.VectorField`) when ``jacobian`` is None.
    jacobian : :math:`G = \partial g/\partial x`, a callable ``(D,) -> (D, D)``.
    x0 : ``(D,)`` initial state.
    dt : the integration step.
    T, transient : steps averaged over, and steps discarded first.
    renormalise_every, seed, k : as in :func:`max_lyapunov`.

    Returns
    -------
    :class:`LyapunovResult` with ``per_time`` the exponent per unit time and ``per_step`` =
    ``per_time * dt``; NaN exponents if the trajectory leaves the floating-point range.
    """
    if jacobian is None:
        if not (
            callable(getattr(vector_field, "g", None))
            and callable(getattr(vector_field, "jacobian", None))
        ):
            raise ValueError("jacobian is required unless vector_field has g and jacobian")
        g, G = vector_field.g, vector_field.jacobian
    else:
        if not callable(vector_field) or not callable(jacobian):
            raise ValueError("vector_field and jacobian must be callables")
        g, G = vector_field, jacobian
    x = np.asarray(as_float_array(host(x0), "x0"), dtype=np.float64)
    if x.ndim != 1 or x.shape[0] < 1:
        raise ValueError(f"x0 must have shape (D,), got {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError("x0 contains non-finite values (NaN or Inf)")
    D = x.shape[0]
    h = positive_float(dt, "dt")
    T, transient, every, k = _check_lyapunov_args(T, transient, renormalise_every, k, D)
    tan = _Tangents(
        _initial_tangents(np.random.default_rng(seed), D, k), transient, transient + T, every
    )
    finite = True
    with np.errstate(all="ignore"):
        for _ in range(transient + T):
            V = tan.V
            k1, K1 = g(x), G(x) @ V
            x2, V2 = x + (h / 2) * k1, V + (h / 2) * K1
            k2, K2 = g(x2), G(x2) @ V2
            x3, V3 = x + (h / 2) * k2, V + (h / 2) * K2
            k3, K3 = g(x3), G(x3) @ V3
            x4, V4 = x + h * k3, V + h * K3
            k4, K4 = g(x4), G(x4) @ V4
            x = x + (h / 6) * (k1 + 2 * k2 + 2 * k3 + k4)
            V = V + (h / 6) * (K1 + 2 * K2 + 2 * K3 + K4)
            if not (np.isfinite(x).all() and np.isfinite(V).all()):
                finite = False
                break
            tan.advance(V)
    return tan.result(T, h, finite)
