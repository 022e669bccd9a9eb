r"""Flows of the ``dysts`` collection, integrated here as the built-in systems are.

Re-exported by :mod:`pitsolve.dsr.systems`, its public home.
"""

from __future__ import annotations

import dataclasses
import difflib
from typing import Any

import numpy as np

from ._sampling import Seed, check_real, simulate

__all__ = ["POINTS_PER_PERIOD", "DystsInfo", "dysts_system", "from_dysts"]

POINTS_PER_PERIOD = 100
"""Samples per dominant period of a dysts flow's default sampling step (as dysts' own
``make_trajectory(pts_per_period=100)`` resamples)."""


@dataclasses.dataclass(frozen=True)
class DystsInfo:
    """What ``pitsolve`` takes from a dysts flow's metadata.

    Attributes
    ----------
    name : the class name in ``dysts.flows`` (e.g. ``"Rossler"``).
    dim : the state dimension N.
    dt : the default sampling step: ``period / POINTS_PER_PERIOD`` (100 samples per dominant
        period, dysts' own resampling convention), or 100 times ``integration_dt`` without a
        period, or 0.01 without either.
    period : the dominant period in time units (metadata ``period``), or None.
    lyapunov_max : dysts' estimate of λ_max per time unit (metadata
        ``maximum_lyapunov_estimated``), or None.
    integration_dt : the metadata's ``dt``: dysts' *integration* step (about period/5000),
        far finer than a useful sampling step; kept for reference.
    """

    name: str
    dim: int
    dt: float
    period: float | None
    lyapunov_max: float | None
    integration_dt: float | None


def _flows() -> Any:
    try:
        import dysts.flows as flows
    except ImportError as exc:
        raise ImportError(
            "from_dysts needs the optional package 'dysts'; install it with `pip install dysts`"
        ) from exc
    return flows


def _flow_names(flows: Any) -> list[str]:
    """The ordinary-differential-equation flows of dysts, sorted."""
    try:
        from dysts.systems import get_attractor_list

        return sorted(get_attractor_list("continuous_no_delay"))
    except Exception:  # older or newer dysts: every class with a right-hand side
        return sorted(n for n, c in vars(flows).items() if isinstance(c, type)
                      and callable(getattr(c, "rhs", None)) and not getattr(c, "delay", False)
                      and not n.startswith("_") and n[0].isupper())


def _number(value: Any) -> float | None:
    """``value`` as a finite float, else None."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if np.isfinite(v) else None


def dysts_system(name: str) -> DystsInfo:
    """The metadata of the dysts flow ``name`` (case-insensitive): dimension, default sampling
    step, period and estimated λ_max.

    Raises
    ------
    ImportError
        If dysts is not installed.
    ValueError
        If ``name`` is not an ordinary-differential-equation flow of dysts (the close matches
        and the valid names are listed).
    """
    flows = _flows()
    names = _flow_names(flows)
    by_lower = {n.lower(): n for n in names}
    real = by_lower.get(str(name).lower())
    if real is None:
        close = difflib.get_close_matches(str(name), names, n=3)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ValueError(f"unknown dysts system {name!r}{hint}; valid names: {', '.join(names)}")
    model = getattr(flows, real)()
    period = _number(getattr(model, "period", None))
    integration_dt = _number(getattr(model, "dt", None))
    period = period if period and period > 0 else None
    integration_dt = integration_dt if integration_dt and integration_dt > 0 else None
    if period is not None:
        dt = period / POINTS_PER_PERIOD
    elif integration_dt is not None:
        dt = 100.0 * integration_dt
    else:
        dt = 0.01
    lyap = _number(getattr(model, "maximum_lyapunov_estimated", None))
    dim = getattr(model, "dimension", None)
    if not isinstance(dim, (int, np.integer)):
        dim = np.asarray(model.ic).shape[-1]
    return DystsInfo(name=real, dim=int(dim), dt=float(dt), period=period, lyapunov_max=lyap,
                     integration_dt=integration_dt)


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
    optional dependency: ``pip install dysts``). The trajectory is integrated exactly as the
    built-in systems are (DOP853, rtol 1e-10, atol 1e-12, sampled every ``dt`` time units,
    seeded start, transient dropped, optional noise and z-scoring), because
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
    flows = _flows()
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
    perturbation = check_real(perturbation, "perturbation", nonnegative=True)
    if transient is None:
        period = getattr(model, "period", None)
        transient = 50.0 * (float(period) if period else 1.0)

    def rhs(t: float, u: np.ndarray) -> np.ndarray:
        return np.asarray(model.rhs(u, t), dtype=np.float64).ravel()

    return simulate(
        f"dysts.{name}",
        rhs,
        {**params, "perturbation": perturbation},
        (ic, perturbation * (np.abs(ic) + 1.0)),
        T=T,
        dt=dt,
        seed=seed,
        transient=transient,
        noise=noise,
        zscore=zscore,
    )
