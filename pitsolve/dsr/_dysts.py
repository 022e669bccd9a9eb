r"""Flows of the ``dysts`` collection, integrated here as the built-in systems are.

Re-exported by :mod:`pitsolve.dsr.systems`, its public home.
"""

from __future__ import annotations

import numpy as np

from ._sampling import Seed, check_real, simulate

__all__ = ["from_dysts"]


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
