r"""The DSR evaluation protocol (MATH.md §9) and multi-run summaries.

From the first test point :math:`x_0` (latent state :math:`[x_0; 0]`), the model generates
1.25·T steps freely; the first 0.25·T are dropped as transient, and the remaining T are
compared with the T test points by :math:`D_{\mathrm{stsp}}`, :math:`D_H`, PE(20) and the
maximal Lyapunov exponent. A run whose generated trajectory leaves the floating-point range is
*diverged*: its measures are NaN and summaries count it explicitly.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .lyapunov import max_lyapunov
from .metrics import power_spectrum_distance, prediction_error, state_space_divergence
from .observed import observation_view

__all__ = ["Evaluation", "evaluate", "generate", "summarize", "validation_score"]


@dataclasses.dataclass
class Evaluation:
    """Measures of one reconstruction (NaN where undefined, e.g. a diverged run)."""

    D_stsp: float
    D_H: float
    PE: float
    lyap_per_step: float
    lyap_per_time: float | None
    diverged: bool
    generated: Any = dataclasses.field(default=None, repr=False)

    def as_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("generated")
        return d


def _initial_state(model: Any, x0: Any) -> np.ndarray:
    M, N = model.state_dim, x0.shape[-1]
    if N > M:
        raise ValueError(f"test data has N={N} dimensions but the model only {M} latent units")
    z0 = np.zeros(M, dtype=model.dtype)
    z0[:N] = x0
    return z0


def generate(model: Any, x0: Any, steps: int) -> np.ndarray:
    """The free-running trajectory ``(steps, M)`` from latent state ``[x0; 0]`` (a model
    with an affine observation: its observations, from the latent state the forcing signal
    of ``x0`` gives; :func:`~pitsolve.dsr.observed.observation_view`)."""
    model = observation_view(model)
    with np.errstate(over="ignore", invalid="ignore"):
        return model.sequential(_initial_state(model, np.asarray(x0)), None, int(steps))


def evaluate(
    model: Any,
    test_data: Any,
    *,
    pe_steps: int = 20,
    dt: float | None = None,
    lyapunov_steps: int = 10_000,
    seed: int = 0,
    keep_trajectory: bool = False,
    spectrum_segment: int | None = None,
) -> Evaluation:
    """All DSR measures of ``model`` against ``test_data`` ``(T, N)`` by the protocol above.

    ``dt`` (the sampling step) converts λ_max to per time unit. ``spectrum_segment``: D_H is
    the mean of D_H over consecutive segments of this many steps (generated segment k
    against test segment k), not D_H of the whole series. For a long free run (the
    reference evaluation of ``pitsolve reconstruct``: 10⁵ steps in segments of 10⁴) this
    keeps D_H the measure it is at 10⁴ steps: its Gaussian smoothing is ``smoothing``
    frequency *bins*, so over 10⁵ steps it would average 10 times fewer frequencies, and two
    stretches of the same Lorenz-63 trajectory would differ by D_H ≈ 0.057 instead of 0.021.
    """
    model = observation_view(model)  # an affine-observed model: measured in the data space
    x = np.asarray(test_data, dtype=float)
    if x.ndim != 2 or x.shape[0] < 4:
        raise ValueError(f"test_data must have shape (T, N) with T ≥ 4, got {x.shape}")
    T, N = x.shape
    drop = T // 4
    traj = generate(model, x[0], T + drop)
    gen = traj[drop:, :N]
    diverged = not bool(np.isfinite(traj).all())
    if diverged:
        d_stsp = d_h = math.nan
    else:
        d_stsp = state_space_divergence(x, gen, seed=seed)
        d_h = _segment_spectrum_distance(x, gen, spectrum_segment or T)
    with np.errstate(over="ignore", invalid="ignore"):
        pe = prediction_error(model, x, n=pe_steps)
        lyap = max_lyapunov(model, traj[-1] if not diverged else None,
                            T=lyapunov_steps, transient=min(1000, lyapunov_steps), dt=dt,
                            seed=seed)
    return Evaluation(D_stsp=float(d_stsp), D_H=float(d_h), PE=float(pe),
                      lyap_per_step=float(lyap.per_step),
                      lyap_per_time=None if lyap.per_time is None else float(lyap.per_time),
                      diverged=diverged, generated=gen if keep_trajectory else None)


def _segment_spectrum_distance(x: np.ndarray, gen: np.ndarray, segment: int) -> float:
    """Mean D_H over the pairs of consecutive ``segment``-step stretches (the last, shorter
    stretch is dropped unless it is the only one)."""
    segment = int(segment)
    if segment < 4:
        raise ValueError(f"spectrum_segment must be ≥ 4 steps, got {segment}")
    n = max(1, len(x) // segment)
    if n == 1:
        return float(power_spectrum_distance(x, gen))
    return float(np.mean([power_spectrum_distance(x[k * segment : (k + 1) * segment],
                                                  gen[k * segment : (k + 1) * segment])
                          for k in range(n)]))


def validation_score(
    held_out: Any, *, steps: int | None = None, record: list[dict[str, float]] | None = None,
    spectrum_segment: int | None = None,
) -> Callable[[Any], float]:
    """A model-selection score for :func:`pitsolve.fit`: D_stsp + D_H of a short free-running
    trajectory against held-out data (lower is better, NaN for a diverged model).

    ``record``, if given, receives ``{"D_stsp": ..., "D_H": ...}`` for every call;
    ``spectrum_segment`` as in :func:`evaluate`.
    """
    x = np.asarray(held_out, dtype=float)
    if steps is not None:
        x = x[:steps]

    def score(model: Any) -> float:
        ev = evaluate(model, x, lyapunov_steps=10, spectrum_segment=spectrum_segment)
        if record is not None:
            record.append({"D_stsp": ev.D_stsp, "D_H": ev.D_H})
        return ev.D_stsp + ev.D_H

    return score


def summarize(runs: Sequence[Evaluation | dict[str, Any]]) -> dict[str, Any]:
    """Median ± MAD of every measure over runs, with diverged runs counted (and excluded)."""
    rows = [r.as_dict() if isinstance(r, Evaluation) else dict(r) for r in runs]
    out: dict[str, Any] = {"runs": len(rows),
                           "diverged": int(sum(bool(r.get("diverged")) for r in rows))}
    keys = [k for k in rows[0] if k != "diverged"] if rows else []
    kept = [r for r in rows if not r.get("diverged")]
    for k in keys:
        vals = np.array([r[k] for r in kept if r[k] is not None], dtype=float)
        vals = vals[np.isfinite(vals)]
        if vals.size:
            med = float(np.median(vals))
            out[k] = {"median": med, "mad": float(np.median(np.abs(vals - med))),
                      "n": int(vals.size)}
        else:
            out[k] = {"median": math.nan, "mad": math.nan, "n": 0}
    return out
