r"""Benchmark chaotic flows :math:`\dot x = g(x)`, sampled as :math:`x_t = x(t\,\Delta t)`.

Every generator returns the observed series as a ``(T, N)`` float64 array, built the same way
(MATH.md §9):

1. ``rng = numpy.random.default_rng(seed)``; the initial state is the system's standard initial
   condition plus ``perturbation * rng.standard_normal(N)``;
2. the flow is integrated with DOP853 (Hairer's 8th-order Dormand–Prince code, as in
   ``scipy.integrate.ode("dop853")``) at rtol 1e-10, atol 1e-12, for ``transient`` time
   units, which are dropped (the state is then on the attractor and decorrelated from the
   initial draw), and then for ``(T - 1) * dt`` time units, sampled every ``dt``; each sample
   is the end of an accepted step, and memory stays O(T·N);
3. optional observation noise :math:`x_t + \eta\,\sigma_n\,\varepsilon_{t,n}`,
   :math:`\varepsilon \sim \mathcal N(0, 1)` drawn from the same ``rng``, with
   :math:`\eta` = ``noise`` and :math:`\sigma_n` the standard deviation of dimension n;
4. optional z-scoring of every dimension (after the noise).

The registry :data:`SYSTEMS` carries, for each system, its generator, default ``dt``, vector
field, Jacobian and a reference maximal Lyapunov exponent :math:`\lambda_{\max}` per time unit.

A few recent clean trajectories are memoised (at most 64 MiB in all), so repeated calls with the
same arguments are cheap; every call returns a fresh array.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
from scipy.integrate import ode

from .._validation import check_positive_int

__all__ = [
    "SYSTEMS",
    "SystemInfo",
    "chen",
    "from_dysts",
    "generate",
    "halvorsen",
    "lorenz63",
    "lorenz96",
    "rossler",
    "sprott_b",
    "system",
    "thomas",
]

RTOL = 1e-10
ATOL = 1e-12
_CACHE_BYTES = 64 * 2**20
_MAX_STEPS = 100_000  # DOP853 steps per sampling interval before giving up
_RUNAWAY = 1e8  # |x| beyond this counts as escaping (the attractors here stay below 100)

Seed = int | np.integer | np.random.Generator | None


# --------------------------------------------------------------------------------------------
# Registry entry
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SystemInfo:
    r"""A benchmark flow :math:`\dot x = g(x; p)` and what is known about it.

    Attributes
    ----------
    name : registry key.
    generate : the generator, ``generate(T, dt, *, seed, transient, noise, zscore, **params)``.
    dim : state dimension N at the default parameters.
    dt : default sampling interval (time units).
    lyapunov_max : reference :math:`\lambda_{\max}` per time unit at the default parameters
        (per step: multiply by ``dt``).
    lyapunov_source : where ``lyapunov_max`` comes from.
    params : the default parameters (read-only).
    vector_field : :math:`g`, ``vector_field(x, **params)`` for x of shape ``(..., N)``, returns
        ``(..., N)``; parameters default to ``params`` (Lorenz-96 reads N from x's last
        axis). Usable directly as the ``g`` of ``pitsolve.dsr.metrics.max_lyapunov_flow``.
    jacobian : :math:`\partial g/\partial x`, ``jacobian(x, **params)`` returns ``(..., N, N)``.
    initial_condition : the standard initial condition seeds are drawn around.
    perturbation : standard deviation of the seeded draw around ``initial_condition``.
    transient : default transient (time units) integrated and dropped.
    """

    name: str
    generate: Callable[..., np.ndarray]
    dim: int
    dt: float
    lyapunov_max: float
    lyapunov_source: str
    params: Mapping[str, float]
    vector_field: Callable[..., np.ndarray] = field(repr=False)
    jacobian: Callable[..., np.ndarray] = field(repr=False)
    initial_condition: tuple[float, ...]
    perturbation: float
    transient: float

    @property
    def lyapunov_time(self) -> float:
        r""":math:`1/\lambda_{\max}`, the e-folding time of small errors (time units)."""
        return 1.0 / self.lyapunov_max


# --------------------------------------------------------------------------------------------
# Vector fields and Jacobians (batched over leading axes)
# --------------------------------------------------------------------------------------------


def _split(x: Any, n: int) -> tuple[np.ndarray, ...]:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 1 or x.shape[-1] != n:
        raise ValueError(f"x must have shape (..., {n}), got {x.shape}")
    return tuple(x[..., i] for i in range(n))


def _stack(components: Sequence[Any]) -> np.ndarray:
    return np.stack(np.broadcast_arrays(*components), axis=-1)


def _matrix(rows: Sequence[Sequence[Any]], batch: tuple[int, ...]) -> np.ndarray:
    n = len(rows)
    J = np.empty((*batch, n, n))
    for i, row in enumerate(rows):
        for j, entry in enumerate(row):
            J[..., i, j] = entry
    return J


# The *_terms functions hold each formula once; they work on floats (the fast right-hand side
# given to the integrator, where NumPy's per-call overhead would dominate) and on arrays alike.


def _lorenz63_terms(x, y, z, sigma, rho, beta):
    return sigma * (y - x), x * (rho - z) - y, x * y - beta * z


def _lorenz63_field(x: Any, *, sigma: float = 10.0, rho: float = 28.0, beta: float = 8 / 3):
    return _stack(_lorenz63_terms(*_split(x, 3), sigma, rho, beta))


def _lorenz63_jacobian(x: Any, *, sigma: float = 10.0, rho: float = 28.0, beta: float = 8 / 3):
    u, v, w = _split(x, 3)
    return _matrix([[-sigma, sigma, 0.0], [rho - w, -1.0, -u], [v, u, -beta]], u.shape)


def _rossler_terms(x, y, z, a, b, c):
    return -y - z, x + a * y, b + z * (x - c)


def _rossler_field(x: Any, *, a: float = 0.2, b: float = 0.2, c: float = 5.7):
    return _stack(_rossler_terms(*_split(x, 3), a, b, c))


def _rossler_jacobian(x: Any, *, a: float = 0.2, b: float = 0.2, c: float = 5.7):
    u, _, w = _split(x, 3)
    return _matrix([[0.0, -1.0, -1.0], [1.0, a, 0.0], [w, 0.0, u - c]], u.shape)


def _chen_terms(x, y, z, a, b, c):
    return a * (y - x), (c - a) * x - x * z + c * y, x * y - b * z


def _chen_field(x: Any, *, a: float = 35.0, b: float = 3.0, c: float = 28.0):
    return _stack(_chen_terms(*_split(x, 3), a, b, c))


def _chen_jacobian(x: Any, *, a: float = 35.0, b: float = 3.0, c: float = 28.0):
    u, v, w = _split(x, 3)
    return _matrix([[-a, a, 0.0], [c - a - w, c, -u], [v, u, -b]], u.shape)


def _halvorsen_terms(x, y, z, a):
    return (
        -a * x - 4.0 * y - 4.0 * z - y * y,
        -a * y - 4.0 * z - 4.0 * x - z * z,
        -a * z - 4.0 * x - 4.0 * y - x * x,
    )


def _halvorsen_field(x: Any, *, a: float = 1.4):
    return _stack(_halvorsen_terms(*_split(x, 3), a))


def _halvorsen_jacobian(x: Any, *, a: float = 1.4):
    u, v, w = _split(x, 3)
    return _matrix(
        [[-a, -4.0 - 2.0 * v, -4.0], [-4.0, -a, -4.0 - 2.0 * w], [-4.0 - 2.0 * u, -4.0, -a]],
        u.shape,
    )


def _thomas_terms(x, y, z, b):
    return np.sin(y) - b * x, np.sin(z) - b * y, np.sin(x) - b * z


def _thomas_field(x: Any, *, b: float = 0.18):
    return _stack(_thomas_terms(*_split(x, 3), b))


def _thomas_jacobian(x: Any, *, b: float = 0.18):
    u, v, w = _split(x, 3)
    return _matrix([[-b, np.cos(v), 0.0], [0.0, -b, np.cos(w)], [np.cos(u), 0.0, -b]], u.shape)


def _sprott_b_terms(x, y, z):
    return y * z, x - y, 1.0 - x * y


def _sprott_b_field(x: Any):
    return _stack(_sprott_b_terms(*_split(x, 3)))


def _sprott_b_jacobian(x: Any):
    u, v, w = _split(x, 3)
    return _matrix([[0.0, w, v], [1.0, -1.0, 0.0], [-v, -u, 0.0]], u.shape)


def _lorenz96_field(x: Any, *, F: float = 8.0):
    r""":math:`\dot x_i = (x_{i+1} - x_{i-2})\,x_{i-1} - x_i + F`, indices modulo N."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 1 or x.shape[-1] < 4:
        raise ValueError(f"x must have shape (..., N) with N >= 4, got {x.shape}")
    i = np.arange(x.shape[-1])
    n = x.shape[-1]
    return (x[..., (i + 1) % n] - x[..., (i - 2) % n]) * x[..., (i - 1) % n] - x + F


def _lorenz96_jacobian(x: Any, *, F: float = 8.0):
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 1 or x.shape[-1] < 4:
        raise ValueError(f"x must have shape (..., N) with N >= 4, got {x.shape}")
    n = x.shape[-1]
    i = np.arange(n)
    ip1, im1, im2 = (i + 1) % n, (i - 1) % n, (i - 2) % n
    J = np.zeros((*x.shape, n))
    # N >= 4 keeps the columns i+1, i-1, i-2 and i distinct
    J[..., i, ip1] = x[..., im1]
    J[..., i, im2] = -x[..., im1]
    J[..., i, im1] = x[..., ip1] - x[..., im2]
    J[..., i, i] = -1.0
    return J


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def _real(value: Any, name: str, *, positive: bool = False, nonnegative: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if positive and v <= 0:
        raise ValueError(f"{name} must be > 0, got {v}")
    if nonnegative and v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    return v


def _rng(seed: Seed) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer))):
        raise TypeError(
            f"seed must be an int, a numpy Generator or None, got {type(seed).__name__}"
        )
    if seed is not None and seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    return np.random.default_rng(seed)


# --------------------------------------------------------------------------------------------
# Integration, memo, observation
# --------------------------------------------------------------------------------------------

_cache: OrderedDict[tuple, np.ndarray] = OrderedDict()
_cache_lock = threading.Lock()


def _cache_get(key: tuple | None) -> np.ndarray | None:
    if key is None:
        return None
    with _cache_lock:
        hit = _cache.get(key)
        if hit is not None:
            _cache.move_to_end(key)
        return hit


def _cache_put(key: tuple | None, value: np.ndarray) -> None:
    if key is None or value.nbytes > _CACHE_BYTES // 4:
        return
    value.setflags(write=False)
    with _cache_lock:
        _cache[key] = value
        while sum(v.nbytes for v in _cache.values()) > _CACHE_BYTES:
            _cache.popitem(last=False)


def _clear_cache() -> None:
    with _cache_lock:
        _cache.clear()


def _integrate(
    rhs: Callable[[float, np.ndarray], np.ndarray],
    x0: np.ndarray,
    T: int,
    dt: float,
    transient: float,
    label: str,
) -> np.ndarray:
    """Drop ``transient`` time units, then sample ``T`` states every ``dt`` (DOP853).

    The compiled DOP853 behind ``scipy.integrate.ode`` is called once per sampling interval
    (and per time unit of the transient), so every sample is the end of an accepted step (no
    interpolation), a runaway solution is caught within one interval, and the step count per
    call is bounded. ``solve_ivp(method="DOP853")`` is the same method with its step loop in
    Python, 2–4× slower on these small systems.
    """
    solver = ode(rhs).set_integrator("dop853", rtol=RTOL, atol=ATOL, nsteps=_MAX_STEPS)
    solver.set_initial_value(np.array(x0, dtype=np.float64), 0.0)
    # the transient in equal intervals of at most max(dt, 1), ending exactly at t = transient
    n_transient = math.ceil(transient / max(dt, 1.0)) if transient > 0 else 0
    times = np.linspace(0.0, transient, n_transient + 1)[1:].tolist()
    out = np.empty((T, np.size(x0)))
    with warnings.catch_warnings(), np.errstate(over="ignore", invalid="ignore"):
        # a failed step is reported below, with the system's name, instead of as a warning
        warnings.simplefilter("ignore", UserWarning)
        for i in range(-n_transient, T):
            t = times[i + n_transient] if i < 0 else transient + i * dt
            y = solver.integrate(t) if t != solver.t else solver.y
            if not solver.successful() or not np.all(np.abs(y) < _RUNAWAY):
                raise RuntimeError(
                    f"{label}: integration failed at t = {t:g}: "
                    + (
                        "the step-size control gave up"
                        if not solver.successful()
                        else f"|x| exceeded {_RUNAWAY:g} (the solution runs away)"
                    )
                    + "; the parameters or initial state may lie outside a bounded attractor"
                )
            if i >= 0:
                out[i] = y
    return out


def _observe(clean: np.ndarray, rng: np.random.Generator, noise: float, zscore: bool) -> np.ndarray:
    x = np.array(clean, dtype=np.float64, copy=True)
    if noise > 0:
        x += noise * clean.std(axis=0) * rng.standard_normal(clean.shape)
    if zscore:
        std = x.std(axis=0)
        # a constant dimension (e.g. T = 1) is centred but not scaled
        x = (x - x.mean(axis=0)) / np.where(std > 0, std, 1.0)
    return x


def _simulate(
    name: str,
    rhs: Callable[[float, np.ndarray], np.ndarray],
    params: Mapping[str, Any],
    args: tuple[Any, Any, Seed, Any, Any, Any],
    *,
    start: tuple[np.ndarray, float | np.ndarray] | None = None,
) -> np.ndarray:
    """Validate, draw the seeded start, integrate (or reuse the memo), then observe.

    ``params`` identifies the trajectory in the memo together with the other arguments, so it
    must hold everything that changes it besides them. ``args`` is the generator's
    ``(T, dt, seed, transient, noise, zscore)``; ``start`` the standard initial condition and
    the perturbation's standard deviation, by default those of ``_STARTS[name]``.
    """
    T, dt, seed, transient, noise, zscore = args
    if start is None:
        start = (np.array(_STARTS[name][0]), _STARTS[name][1])
    x_standard, perturbation = start
    T = check_positive_int(T, "T")
    dt = _real(dt, "dt", positive=True)
    transient = _real(transient, "transient", nonnegative=True)
    noise = _real(noise, "noise", nonnegative=True)
    if not isinstance(zscore, (bool, np.bool_)):
        raise TypeError(f"zscore must be a bool, got {type(zscore).__name__}")
    rng = _rng(seed)
    cacheable = seed is not None and not isinstance(seed, np.random.Generator)
    key = (
        (name, T, dt, int(seed), transient, tuple((k, repr(v)) for k, v in sorted(params.items())))
        if cacheable
        else None
    )
    # always draw the initial state, so the noise comes from the same rng position either way
    x0 = x_standard + perturbation * rng.standard_normal(x_standard.size)
    clean = _cache_get(key)
    if clean is None:
        label = f"{name}({', '.join(f'{k}={v}' for k, v in params.items())})"
        clean = _integrate(rhs, x0, T, dt, transient, label)
        _cache_put(key, clean)
    return _observe(clean, rng, noise, bool(zscore))


def _terms_rhs(terms: Callable[..., tuple], *params: float) -> Callable:
    def rhs(t: float, u: np.ndarray) -> np.ndarray:
        return np.array(terms(*u.tolist(), *params))

    return rhs


# --------------------------------------------------------------------------------------------
# Generators
# --------------------------------------------------------------------------------------------


def lorenz63(
    T: int = 100_000,
    dt: float = 0.01,
    *,
    seed: Seed = 0,
    transient: float = 50.0,
    noise: float = 0.0,
    zscore: bool = True,
    sigma: float = 10.0,
    rho: float = 28.0,
    beta: float = 8 / 3,
) -> np.ndarray:
    r""":math:`\dot x = \sigma(y - x),\ \dot y = x(\rho - z) - y,\ \dot z = xy - \beta z`.

    Lorenz (1963), at the classic :math:`\sigma = 10, \rho = 28, \beta = 8/3`:
    :math:`\lambda_{\max} \approx 0.906` per time unit, mean revolution ≈ 0.75 time units.

    Parameters
    ----------
    T : number of samples (≥ 1).
    dt : sampling interval in time units (> 0).
    seed : seeds the initial state, drawn around (1, 1, 1) with standard deviation 1, and the
        observation noise; an int (memoised), a ``numpy.random.Generator`` or None.
    transient : time units integrated and dropped before the first sample (default 50, about
        45 Lyapunov times).
    noise : observation-noise level as a fraction of each dimension's standard deviation
        (0.05 is 5 % noise).
    zscore : standardise each dimension to mean 0, standard deviation 1 (after the noise).
    sigma, rho, beta : the parameters.

    Returns
    -------
    ``(T, 3)`` float64 array.
    """
    p = {
        "sigma": _real(sigma, "sigma"),
        "rho": _real(rho, "rho"),
        "beta": _real(beta, "beta"),
    }
    rhs = _terms_rhs(_lorenz63_terms, *p.values())
    return _simulate("lorenz63", rhs, p, (T, dt, seed, transient, noise, zscore))


def lorenz96(
    T: int = 100_000,
    dt: float = 0.04,
    *,
    N: int = 10,
    F: float = 8.0,
    seed: Seed = 0,
    transient: float = 50.0,
    noise: float = 0.0,
    zscore: bool = True,
) -> np.ndarray:
    r""":math:`\dot x_i = (x_{i+1} - x_{i-2})\,x_{i-1} - x_i + F`, :math:`i = 1..N` cyclic.

    Lorenz (1996). At N = 10, F = 8: :math:`\lambda_{\max} \approx 1.19` per time unit; at
    N = 20, F = 8: ≈ 1.55 (both computed here, see :data:`SYSTEMS`).

    Parameters
    ----------
    T, dt, seed, noise, zscore : as in :func:`lorenz63`; the initial state is drawn around
        :math:`x_i = F` with standard deviation 1.
    N : number of sites (≥ 4).
    F : forcing.
    transient : time units dropped (default 50, about 60 Lyapunov times at F = 8).

    Returns
    -------
    ``(T, N)`` float64 array.
    """
    N = check_positive_int(N, "N")
    if N < 4:
        raise ValueError(f"N must be >= 4 for Lorenz-96, got {N}")
    F = _real(F, "F")
    index = np.arange(N)
    ip1, im1, im2 = (index + 1) % N, (index - 1) % N, (index - 2) % N

    def rhs(t: float, u: np.ndarray) -> np.ndarray:
        return (u[ip1] - u[im2]) * u[im1] - u + F

    start = (np.full(N, F), 1.0)
    return _simulate(
        "lorenz96", rhs, {"N": N, "F": F}, (T, dt, seed, transient, noise, zscore), start=start
    )


def rossler(
    T: int = 100_000,
    dt: float = 0.1,
    *,
    seed: Seed = 0,
    transient: float = 300.0,
    noise: float = 0.0,
    zscore: bool = True,
    a: float = 0.2,
    b: float = 0.2,
    c: float = 5.7,
) -> np.ndarray:
    r""":math:`\dot x = -y - z,\ \dot y = x + a y,\ \dot z = b + z (x - c)`.

    Rössler (1976), at :math:`a = b = 0.2, c = 5.7`: :math:`\lambda_{\max} \approx 0.071` per
    time unit; one revolution ≈ 5.9 time units (≈ 59 samples at the default ``dt = 0.1``).

    Parameters
    ----------
    T, dt, seed, noise, zscore : as in :func:`lorenz63`; the initial state is drawn around
        (1, 1, 1) with standard deviation 1.
    transient : time units dropped (default 300, about 21 Lyapunov times).
    a, b, c : the parameters.

    Returns
    -------
    ``(T, 3)`` float64 array.
    """
    p = {"a": _real(a, "a"), "b": _real(b, "b"), "c": _real(c, "c")}
    rhs = _terms_rhs(_rossler_terms, *p.values())
    return _simulate("rossler", rhs, p, (T, dt, seed, transient, noise, zscore))


def chen(
    T: int = 100_000,
    dt: float = 0.005,
    *,
    seed: Seed = 0,
    transient: float = 25.0,
    noise: float = 0.0,
    zscore: bool = True,
    a: float = 35.0,
    b: float = 3.0,
    c: float = 28.0,
) -> np.ndarray:
    r""":math:`\dot x = a(y - x),\ \dot y = (c - a)x - xz + cy,\ \dot z = xy - bz`.

    Chen & Ueta (1999), at :math:`a = 35, b = 3, c = 28`: :math:`\lambda_{\max} \approx 2.03`
    per time unit; the z-oscillation takes ≈ 0.5 time units (≈ 100 samples at ``dt = 0.005``).

    Parameters
    ----------
    T, dt, seed, noise, zscore : as in :func:`lorenz63`; the initial state is drawn around
        (−10, 0, 37) with standard deviation 1.
    transient : time units dropped (default 25, about 50 Lyapunov times).
    a, b, c : the parameters.

    Returns
    -------
    ``(T, 3)`` float64 array.
    """
    p = {"a": _real(a, "a"), "b": _real(b, "b"), "c": _real(c, "c")}
    rhs = _terms_rhs(_chen_terms, *p.values())
    return _simulate("chen", rhs, p, (T, dt, seed, transient, noise, zscore))


def halvorsen(
    T: int = 100_000,
    dt: float = 0.02,
    *,
    seed: Seed = 0,
    transient: float = 50.0,
    noise: float = 0.0,
    zscore: bool = True,
    a: float = 1.4,
) -> np.ndarray:
    r""":math:`\dot x = -ax - 4y - 4z - y^2` and its two cyclic permutations :math:`x\to y\to z`.

    Halvorsen's cyclically symmetric flow (Sprott, *Elegant Chaos*, 2010), at :math:`a = 1.4`:
    :math:`\lambda_{\max} \approx 0.68` per time unit; one revolution ≈ 1.4 time units.

    Parameters
    ----------
    T, dt, seed, noise, zscore : as in :func:`lorenz63`; the initial state is drawn around
        (−5, 0, 0) with standard deviation 0.5.
    transient : time units dropped (default 50, about 34 Lyapunov times).
    a : the damping parameter.

    Returns
    -------
    ``(T, 3)`` float64 array.
    """
    p = {"a": _real(a, "a")}
    rhs = _terms_rhs(_halvorsen_terms, *p.values())
    return _simulate("halvorsen", rhs, p, (T, dt, seed, transient, noise, zscore))


def thomas(
    T: int = 100_000,
    dt: float = 0.2,
    *,
    seed: Seed = 0,
    transient: float = 1000.0,
    noise: float = 0.0,
    zscore: bool = True,
    b: float = 0.18,
) -> np.ndarray:
    r""":math:`\dot x = \sin y - bx,\ \dot y = \sin z - by,\ \dot z = \sin x - bz`.

    Thomas' cyclically symmetric attractor (Thomas 1999; Sprott, *Elegant Chaos*), at
    :math:`b = 0.18`: :math:`\lambda_{\max} \approx 0.034` per time unit — a slow flow, one
    oscillation takes 30–40 time units. (At the often-quoted b = 0.208186, just past the onset
    of chaos, :math:`\lambda_{\max}` is below 0.01 and hard to verify.)

    Parameters
    ----------
    T, dt, seed, noise, zscore : as in :func:`lorenz63`; the initial state is drawn around
        (0.1, 0, 0) with standard deviation 0.1.
    transient : time units dropped (default 1000, about 34 Lyapunov times).
    b : the damping parameter.

    Returns
    -------
    ``(T, 3)`` float64 array.
    """
    p = {"b": _real(b, "b")}
    rhs = _terms_rhs(_thomas_terms, *p.values())
    return _simulate("thomas", rhs, p, (T, dt, seed, transient, noise, zscore))


def sprott_b(
    T: int = 100_000,
    dt: float = 0.1,
    *,
    seed: Seed = 0,
    transient: float = 200.0,
    noise: float = 0.0,
    zscore: bool = True,
) -> np.ndarray:
    r""":math:`\dot x = yz,\ \dot y = x - y,\ \dot z = 1 - xy`.

    Sprott's case B (Sprott 1994, Phys. Rev. E 50, R647), parameter-free:
    :math:`\lambda_{\max} \approx 0.21` per time unit.

    Parameters
    ----------
    T, dt, seed, noise, zscore : as in :func:`lorenz63`; the initial state is drawn around
        (0.1, 0.1, 0.1) with standard deviation 0.05.
    transient : time units dropped (default 200, about 40 Lyapunov times).

    Returns
    -------
    ``(T, 3)`` float64 array.
    """
    rhs = _terms_rhs(_sprott_b_terms)
    return _simulate("sprott_b", rhs, {}, (T, dt, seed, transient, noise, zscore))


# standard initial condition and the standard deviation of the seeded draw around it
_STARTS: dict[str, tuple[tuple[float, ...], float]] = {
    "lorenz63": ((1.0, 1.0, 1.0), 1.0),
    "lorenz96": ((8.0,) * 10, 1.0),  # x_i = F; the generator uses its own N and F
    "rossler": ((1.0, 1.0, 1.0), 1.0),
    "chen": ((-10.0, 0.0, 37.0), 1.0),
    "halvorsen": ((-5.0, 0.0, 0.0), 0.5),
    "thomas": ((0.1, 0.0, 0.0), 0.1),
    "sprott_b": ((0.1, 0.1, 0.1), 0.05),
}

# --------------------------------------------------------------------------------------------
# Registry
# --------------------------------------------------------------------------------------------

# How the "computed here" values were obtained (a one-off run, not part of the test suite):
# Benettin's method with one tangent vector v, classical RK4 on (x, v) at step h, |v| renormalised
# every 10 steps, 500 time units of transient, then 1e5 time units split into 50 blocks; the
# value is the mean over blocks and the error its standard error.
_COMPUTED = "computed here (Benettin, RK4 h = {h}, 1e5 time units): {value} ± {se}"

SYSTEMS: dict[str, SystemInfo] = {
    "lorenz63": SystemInfo(
        name="lorenz63",
        generate=lorenz63,
        dim=3,
        dt=0.01,
        lyapunov_max=0.9056,
        lyapunov_source="Sprott, Chaos and Time-Series Analysis (2003): 0.9056; "
        + _COMPUTED.format(h=0.002, value=0.9055, se=0.0005),
        params=MappingProxyType({"sigma": 10.0, "rho": 28.0, "beta": 8 / 3}),
        vector_field=_lorenz63_field,
        jacobian=_lorenz63_jacobian,
        initial_condition=_STARTS["lorenz63"][0],
        perturbation=_STARTS["lorenz63"][1],
        transient=50.0,
    ),
    "lorenz96": SystemInfo(
        name="lorenz96",
        generate=lorenz96,
        dim=10,
        dt=0.04,
        lyapunov_max=1.188,
        lyapunov_source=_COMPUTED.format(h=0.005, value=1.188, se=0.003)
        + " at N = 10, F = 8 (N = 20: 1.552 ± 0.003)",
        params=MappingProxyType({"N": 10, "F": 8.0}),
        vector_field=_lorenz96_field,
        jacobian=_lorenz96_jacobian,
        initial_condition=_STARTS["lorenz96"][0],
        perturbation=_STARTS["lorenz96"][1],
        transient=50.0,
    ),
    "rossler": SystemInfo(
        name="rossler",
        generate=rossler,
        dim=3,
        dt=0.1,
        lyapunov_max=0.0714,
        lyapunov_source="Sprott, Chaos and Time-Series Analysis (2003): 0.0714; "
        + _COMPUTED.format(h=0.01, value=0.0703, se=0.0005),
        params=MappingProxyType({"a": 0.2, "b": 0.2, "c": 5.7}),
        vector_field=_rossler_field,
        jacobian=_rossler_jacobian,
        initial_condition=_STARTS["rossler"][0],
        perturbation=_STARTS["rossler"][1],
        transient=300.0,
    ),
    "chen": SystemInfo(
        name="chen",
        generate=chen,
        dim=3,
        dt=0.005,
        lyapunov_max=2.030,
        lyapunov_source=_COMPUTED.format(h=0.001, value=2.030, se=0.003)
        + " (the commonly quoted value is 2.027)",
        params=MappingProxyType({"a": 35.0, "b": 3.0, "c": 28.0}),
        vector_field=_chen_field,
        jacobian=_chen_jacobian,
        initial_condition=_STARTS["chen"][0],
        perturbation=_STARTS["chen"][1],
        transient=25.0,
    ),
    "halvorsen": SystemInfo(
        name="halvorsen",
        generate=halvorsen,
        dim=3,
        dt=0.02,
        lyapunov_max=0.678,
        lyapunov_source=_COMPUTED.format(h=0.002, value=0.678, se=0.0014),
        params=MappingProxyType({"a": 1.4}),
        vector_field=_halvorsen_field,
        jacobian=_halvorsen_jacobian,
        initial_condition=_STARTS["halvorsen"][0],
        perturbation=_STARTS["halvorsen"][1],
        transient=50.0,
    ),
    "thomas": SystemInfo(
        name="thomas",
        generate=thomas,
        dim=3,
        dt=0.2,
        lyapunov_max=0.0348,
        lyapunov_source=_COMPUTED.format(h=0.02, value=0.0348, se=0.0009)
        + " (the commonly quoted value is 0.0349)",
        params=MappingProxyType({"b": 0.18}),
        vector_field=_thomas_field,
        jacobian=_thomas_jacobian,
        initial_condition=_STARTS["thomas"][0],
        perturbation=_STARTS["thomas"][1],
        transient=1000.0,
    ),
    "sprott_b": SystemInfo(
        name="sprott_b",
        generate=sprott_b,
        dim=3,
        dt=0.1,
        lyapunov_max=0.210,
        lyapunov_source="Sprott, Phys. Rev. E 50, R647 (1994): 0.210; "
        + _COMPUTED.format(h=0.01, value=0.2103, se=0.0005),
        params=MappingProxyType({}),
        vector_field=_sprott_b_field,
        jacobian=_sprott_b_jacobian,
        initial_condition=_STARTS["sprott_b"][0],
        perturbation=_STARTS["sprott_b"][1],
        transient=200.0,
    ),
}


def system(name: str) -> SystemInfo:
    """The registry entry of a benchmark system (``ValueError`` listing the valid names)."""
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    key = name.lower().replace("-", "_")
    if key not in SYSTEMS:
        raise ValueError(f"unknown system {name!r}; valid names: {', '.join(sorted(SYSTEMS))}")
    return SYSTEMS[key]


def generate(name: str, T: int = 100_000, **kwargs: Any) -> np.ndarray:
    r""":math:`(x_{t\Delta t})_{t<T}` of the named benchmark flow, as a ``(T, N)`` array.

    ``generate("lorenz63", T, **kw)`` is ``lorenz63(T, **kw)``; ``dt`` defaults to the
    system's default (see :data:`SYSTEMS`). Unknown names raise ``ValueError`` listing the
    valid ones; unknown keywords raise ``TypeError``.
    """
    return system(name).generate(T, **kwargs)


# --------------------------------------------------------------------------------------------
# dysts adapter
# --------------------------------------------------------------------------------------------


def from_dysts(
    name: str,
    T: int,
    dt: float,
    *,
    seed: Seed = 0,
    transient: float | None = None,
    noise: float = 0.0,
    zscore: bool = True,
    perturbation: float = 1e-2,
    **params: float,
) -> np.ndarray:
    r""":math:`(x_{t\Delta t})_{t<T}` of the flow ``dysts.flows.<name>``, integrated here.

    Only the right-hand side, parameters and initial condition are taken from ``dysts`` (an
    optional dependency: ``pip install dysts``). The trajectory is integrated by this module
    exactly as the built-in systems are (DOP853, rtol 1e-10, atol 1e-12, sampled every ``dt``
    time units, seeded start, transient dropped, optional noise and z-scoring), because
    ``make_trajectory`` is unreliable as a reference:

    - it resamples by the system's dominant period (``pts_per_period``), not by ``dt``, by
      default, and its ``dt=`` keyword is ignored in some versions;
    - setting a parameter on a constructed system has no effect in some versions (parameters
      are bound at construction) — pass them here, they go to the constructor;
    - its default solver (Radau) is slow, and its output changed between versions.

    Parameters
    ----------
    name : a class of ``dysts.flows``, e.g. ``"Lorenz"``.
    T, dt, seed, noise, zscore : as in :func:`lorenz63`.
    transient : time units dropped; default 50 of the system's periods (its ``period``
        attribute, 1 if absent).
    perturbation : the seeded initial state is ``ic + perturbation * (|ic| + 1) * N(0, 1)``,
        with ``ic`` the system's stored initial condition.
    **params : parameters passed to the dysts constructor.

    Returns
    -------
    ``(T, N)`` float64 array.

    Raises
    ------
    ImportError
        If dysts is not installed.
    ValueError
        If ``name`` is not a continuous-time flow of dysts.
    """
    try:
        import dysts.flows as flows
    except ImportError as exc:
        raise ImportError(
            "from_dysts needs the optional package 'dysts'; install it with `pip install dysts`"
        ) from exc
    cls = getattr(flows, name, None) if isinstance(name, str) else None
    if not isinstance(cls, type):
        raise ValueError(f"dysts.flows has no system named {name!r}")
    model = cls(**params)
    if getattr(model, "delay", False) or not callable(getattr(model, "rhs", None)):
        raise ValueError(f"dysts system {name!r} is not an ordinary differential equation")
    ic = np.asarray(model.ic, dtype=np.float64)
    if ic.ndim > 1:
        ic = ic[0]
    ic = ic.ravel()
    perturbation = _real(perturbation, "perturbation", nonnegative=True)
    if transient is None:
        period = getattr(model, "period", None)
        transient = 50.0 * (float(period) if period else 1.0)

    def rhs(t: float, u: np.ndarray) -> np.ndarray:
        return np.asarray(model.rhs(u, t), dtype=np.float64).ravel()

    start = (ic, perturbation * (np.abs(ic) + 1.0))
    return _simulate(
        f"dysts.{name}",
        rhs,
        {**params, "perturbation": perturbation},
        (T, dt, seed, transient, noise, zscore),
        start=start,
    )
