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

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from ._dysts import DystsInfo, dysts_system, from_dysts
from ._sampling import ATOL, RTOL, Seed  # noqa: F401  (ATOL, RTOL importable from here)
from ._sampling import clear_cache as _clear_cache  # noqa: F401  (the tests clear the memo)
from ._specs import Components, FlowTable, Ring

__all__ = [
    "SYSTEMS",
    "DystsInfo",
    "SystemInfo",
    "chen",
    "dysts_system",
    "from_dysts",
    "generate",
    "halvorsen",
    "lorenz63",
    "lorenz63_drift",
    "lorenz96",
    "rossler",
    "sprott_b",
    "system",
    "thomas",
]

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
        axis). Usable directly as the ``g`` of ``pitsolve.dsr.lyapunov.max_lyapunov_flow``.
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
# The table: each system written once
# --------------------------------------------------------------------------------------------
#
# An entry is a decorated function: the function states the generator's signature (whose
# defaults are the system's default dt, transient and parameters) and its docstring; the
# decorator holds the right-hand side g and its Jacobian (written once, on floats and arrays
# alike), the standard initial condition with the standard deviation of the seeded draw around
# it, and the reference maximal Lyapunov exponent. The generators, SYSTEMS, system() and
# generate() are derived from the table (see _specs.py; the integration, memo and observation
# are in _sampling.py).
#
# How the "computed here" exponents were obtained (a one-off run, not part of the test suite):
# Benettin's method with one tangent vector v, classical RK4 on (x, v) at step h, |v|
# renormalised every 10 steps, 500 time units of transient, then 1e5 time units split into 50
# blocks; the value is the mean over blocks and the error its standard error.
_COMPUTED = "computed here (Benettin, RK4 h = {h}, 1e5 time units): {value} ± {se}"

_TABLE = FlowTable()


@_TABLE.entry(
    Components(
        terms=lambda x, y, z, sigma, rho, beta: (
            sigma * (y - x),
            x * (rho - z) - y,
            x * y - beta * z,
        ),
        rows=lambda x, y, z, sigma, rho, beta: (
            (-sigma, sigma, 0.0),
            (rho - z, -1.0, -x),
            (y, x, -beta),
        ),
    ),
    initial_condition=(1.0, 1.0, 1.0),
    perturbation=1.0,
    lyapunov_max=0.9056,
    lyapunov_source="Sprott, Chaos and Time-Series Analysis (2003): 0.9056; "
    + _COMPUTED.format(h=0.002, value=0.9055, se=0.0005),
)
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


@_TABLE.entry(
    Components(
        terms=lambda x, y, z, u, v, sigma, rho, beta, amplitude, period, gamma: (
            sigma * (y - x),
            x * (rho + amplitude * u - z) - y,
            x * y - beta * z,
            -2 * np.pi / period * v + gamma * u * (1.0 - u * u - v * v),
            2 * np.pi / period * u + gamma * v * (1.0 - u * u - v * v),
        ),
        rows=lambda x, y, z, u, v, sigma, rho, beta, amplitude, period, gamma: (
            (-sigma, sigma, 0.0, 0.0, 0.0),
            (rho + amplitude * u - z, -1.0, -x, amplitude * x, 0.0),
            (y, x, -beta, 0.0, 0.0),
            (0.0, 0.0, 0.0, gamma * (1.0 - 3 * u * u - v * v),
             -2 * np.pi / period - 2 * gamma * u * v),
            (0.0, 0.0, 0.0, 2 * np.pi / period - 2 * gamma * u * v,
             gamma * (1.0 - u * u - 3 * v * v)),
        ),
    ),
    initial_condition=(1.0, 1.0, 1.0, 1.0, 0.0),
    perturbation=1.0,
    lyapunov_max=0.833,
    lyapunov_source=_COMPUTED.format(h=0.005, value=0.833, se=0.003)
    + " (50 blocks of 2000 time units, 20 slow periods each; 0.644 ± 0.005 at A = 8)",
)
def lorenz63_drift(
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
    amplitude: float = 6.0,
    period: float = 100.0,
    gamma: float = 1.0,
) -> np.ndarray:
    r"""Lorenz-63 with :math:`\rho` driven by a slow oscillator, made autonomous (5 dimensions).

    .. math::

        \dot x = \sigma(y - x),\quad \dot y = x(\rho + A u - z) - y,\quad
        \dot z = xy - \beta z,\\
        \dot u = -\omega v + \gamma u (1 - u^2 - v^2),\quad
        \dot v = \omega u + \gamma v (1 - u^2 - v^2),\qquad \omega = 2\pi / P.

    On its attractor :math:`u^2 + v^2 = 1` and (u, v) is the harmonic oscillator
    :math:`\dot u = -\omega v,\ \dot v = \omega u`: the Rayleigh term (rate γ) only pulls
    every seeded start onto the unit circle, so that the modulation amplitude is A for every
    seed. :math:`\rho(t) = \rho + A\cos(\omega t + \varphi)` sweeps [22, 34] at the
    default A = 6, once every P = 100 time units (10⁴ samples at ``dt = 0.01``, far longer than
    a training window of 200 samples): z's mean follows ρ (from 19 to 29 between the quarters
    of the cycle around its low and high ends), and the attractor's size and the rate of
    switching between its wings grow with ρ (x's standard deviation by 1.3 times, the
    switching rate by 1.5 times). :math:`\lambda_{\max}` (per time unit, averaged over the
    slow cycle) is smaller than Lorenz-63's 0.906 (see :data:`SYSTEMS`). A benchmark for slow
    time scales: the long-series experiment of docs/dsr.md observes x, y, z and leaves the
    slow phase (u, v) hidden. (At A = 8 the trajectory also spends about a quarter of every
    cycle spiralling slowly around a focus, while ρ is below the subcritical Hopf value
    24.74.)

    Parameters
    ----------
    T, dt, seed, noise, zscore : as in :func:`lorenz63`; the initial state is drawn around
        (1, 1, 1, 1, 0) with standard deviation 1.
    transient : time units dropped (default 50).
    sigma, rho, beta : Lorenz's parameters (ρ is the centre of the sweep).
    amplitude : A, the amplitude of ρ's modulation.
    period : P = 2π/ω, the period of the modulation in time units.
    gamma : γ, the rate at which (u, v) is pulled onto the unit circle.

    Returns
    -------
    ``(T, 5)`` float64 array: x, y, z, u, v.
    """


@functools.cache
def _ring(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The site indices i + 1, i - 1, i - 2 modulo n."""
    i = np.arange(n)
    return (i + 1) % n, (i - 1) % n, (i - 2) % n


def _lorenz96_field(x: np.ndarray, F: float) -> np.ndarray:
    ip1, im1, im2 = _ring(x.shape[-1])
    # the sites on the first axis (of the transpose), where fancy indexing is fastest: the
    # integrator calls this ~36 times per sample
    y = x.T
    return ((y[ip1] - y[im2]) * y[im1] - y + F).T


def _lorenz96_jacobian(x: np.ndarray, F: float) -> np.ndarray:
    n = x.shape[-1]
    i = np.arange(n)
    ip1, im1, im2 = _ring(n)
    J = np.zeros((*x.shape, n))
    # N >= 4 keeps the columns i+1, i-1, i-2 and i distinct
    J[..., i, ip1] = x[..., im1]
    J[..., i, im2] = -x[..., im1]
    J[..., i, im1] = x[..., ip1] - x[..., im2]
    J[..., i, i] = -1.0
    return J


@_TABLE.entry(
    Ring(_lorenz96_field, _lorenz96_jacobian, title="Lorenz-96", sites="N", min_sites=4),
    initial_condition=lambda N, F: np.full(N, F),  # x_i = F
    perturbation=1.0,
    lyapunov_max=1.188,
    lyapunov_source=_COMPUTED.format(h=0.005, value=1.188, se=0.003)
    + " at N = 10, F = 8 (N = 20: 1.552 ± 0.003)",
)
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


@_TABLE.entry(
    Components(
        terms=lambda x, y, z, a, b, c: (-y - z, x + a * y, b + z * (x - c)),
        rows=lambda x, y, z, a, b, c: ((0.0, -1.0, -1.0), (1.0, a, 0.0), (z, 0.0, x - c)),
    ),
    initial_condition=(1.0, 1.0, 1.0),
    perturbation=1.0,
    lyapunov_max=0.0714,
    lyapunov_source="Sprott, Chaos and Time-Series Analysis (2003): 0.0714; "
    + _COMPUTED.format(h=0.01, value=0.0703, se=0.0005),
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


@_TABLE.entry(
    Components(
        terms=lambda x, y, z, a, b, c: (a * (y - x), (c - a) * x - x * z + c * y, x * y - b * z),
        rows=lambda x, y, z, a, b, c: ((-a, a, 0.0), (c - a - z, c, -x), (y, x, -b)),
    ),
    initial_condition=(-10.0, 0.0, 37.0),
    perturbation=1.0,
    lyapunov_max=2.030,
    lyapunov_source=_COMPUTED.format(h=0.001, value=2.030, se=0.003)
    + " (the commonly quoted value is 2.027)",
)
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


@_TABLE.entry(
    Components(
        terms=lambda x, y, z, a: (
            -a * x - 4.0 * y - 4.0 * z - y * y,
            -a * y - 4.0 * z - 4.0 * x - z * z,
            -a * z - 4.0 * x - 4.0 * y - x * x,
        ),
        rows=lambda x, y, z, a: (
            (-a, -4.0 - 2.0 * y, -4.0),
            (-4.0, -a, -4.0 - 2.0 * z),
            (-4.0 - 2.0 * x, -4.0, -a),
        ),
    ),
    initial_condition=(-5.0, 0.0, 0.0),
    perturbation=0.5,
    lyapunov_max=0.678,
    lyapunov_source=_COMPUTED.format(h=0.002, value=0.678, se=0.0014),
)
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


@_TABLE.entry(
    Components(
        terms=lambda x, y, z, b: (np.sin(y) - b * x, np.sin(z) - b * y, np.sin(x) - b * z),
        rows=lambda x, y, z, b: ((-b, np.cos(y), 0.0), (0.0, -b, np.cos(z)), (np.cos(x), 0.0, -b)),
    ),
    initial_condition=(0.1, 0.0, 0.0),
    perturbation=0.1,
    lyapunov_max=0.0348,
    lyapunov_source=_COMPUTED.format(h=0.02, value=0.0348, se=0.0009)
    + " (the commonly quoted value is 0.0349)",
)
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


@_TABLE.entry(
    Components(
        terms=lambda x, y, z: (y * z, x - y, 1.0 - x * y),
        rows=lambda x, y, z: ((0.0, z, y), (1.0, -1.0, 0.0), (-y, -x, 0.0)),
    ),
    initial_condition=(0.1, 0.1, 0.1),
    perturbation=0.05,
    lyapunov_max=0.210,
    lyapunov_source="Sprott, Phys. Rev. E 50, R647 (1994): 0.210; "
    + _COMPUTED.format(h=0.01, value=0.2103, se=0.0005),
)
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


# --------------------------------------------------------------------------------------------
# Registry, derived from the table
# --------------------------------------------------------------------------------------------

SYSTEMS: dict[str, SystemInfo] = {
    name: SystemInfo(
        name=name,
        generate=spec.generate,
        dim=spec.dim,
        dt=spec.dt,
        lyapunov_max=spec.lyapunov_max,
        lyapunov_source=spec.lyapunov_source,
        params=MappingProxyType(spec.params),
        vector_field=spec.vector_field,
        jacobian=spec.jacobian,
        initial_condition=tuple(spec.start(spec.params).tolist()),
        perturbation=spec.perturbation,
        transient=spec.transient,
    )
    for name, spec in _TABLE.items()
}
"""The benchmark systems by name, in the order of the table: a :class:`SystemInfo` each."""


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
