r"""Sampling a flow :math:`\dot x = g(x)` as :math:`x_t = x(t\,\Delta t)`: argument checks, the
seeded start, DOP853 integration, the memo of clean trajectories, observation noise and
z-scoring (steps 1–4 of :mod:`pitsolve.dsr.systems`).

Every built-in system and :func:`~pitsolve.dsr.systems.from_dysts` go through
:func:`simulate`, so they are integrated, memoised and observed alike.
"""

from __future__ import annotations

import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy.integrate import ode

from .._validation import check_positive_int

__all__ = ["ATOL", "RTOL", "Seed", "check_real", "clear_cache", "simulate"]

RTOL = 1e-10
ATOL = 1e-12
_CACHE_BYTES = 64 * 2**20
_MAX_STEPS = 100_000  # DOP853 steps per sampling interval before giving up
_RUNAWAY = 1e8  # |x| beyond this counts as escaping (the attractors here stay below 100)

Seed = int | np.integer | np.random.Generator | None


# --------------------------------------------------------------------------------------------
# Argument checks
# --------------------------------------------------------------------------------------------


def check_real(
    value: Any, name: str, *, positive: bool = False, nonnegative: bool = False
) -> float:
    """``value`` as a finite float (``TypeError``/``ValueError`` naming the argument)."""
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
# Memo of recent clean trajectories (thread-safe, at most _CACHE_BYTES in all)
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


def clear_cache() -> None:
    """Forget every memoised trajectory."""
    with _cache_lock:
        _cache.clear()


# --------------------------------------------------------------------------------------------
# Integration and observation
# --------------------------------------------------------------------------------------------


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


def simulate(
    name: str,
    rhs: Callable[[float, np.ndarray], np.ndarray],
    params: Mapping[str, Any],
    start: tuple[np.ndarray, float | np.ndarray],
    *,
    T: Any,
    dt: Any,
    seed: Seed,
    transient: Any,
    noise: Any,
    zscore: Any,
) -> np.ndarray:
    """Validate, draw the seeded start, integrate (or reuse the memo), then observe.

    ``params`` identifies the trajectory in the memo together with ``name`` and the other
    arguments, so it must hold everything that changes it besides them; it also names the
    trajectory in error messages. ``start`` is the standard initial condition and the standard
    deviation of the seeded draw around it.
    """
    x_standard, perturbation = start
    T = check_positive_int(T, "T")
    dt = check_real(dt, "dt", positive=True)
    transient = check_real(transient, "transient", nonnegative=True)
    noise = check_real(noise, "noise", nonnegative=True)
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
