r"""Gradients on :class:`~pitsolve.models.base.Params`: the structure check, the global norm
:math:`\|g\|` and clipping to :math:`\|g\| \le c`, with non-finite entries reported by name."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from ...backends import array_namespace, to_numpy
from ...models.base import Params
from ._checks import positive_finite

__all__ = ["clip_by_global_norm", "global_norm"]


def _check_structure(params: Params, other: Mapping[str, Any], name: str) -> Params:
    """``other`` as ``Params`` with the names and shapes of ``params`` (in their order)."""
    if not isinstance(other, Mapping):
        raise TypeError(f"{name} must be a mapping name -> array (Params), got {type(other)}")
    missing = [k for k in params if k not in other]
    extra = [k for k in other if k not in params]
    if missing or extra:
        raise ValueError(
            f"{name} must have the parameter names {list(params)}; "
            f"missing {missing}, unexpected {extra}"
        )
    out = Params({k: other[k] for k in params})
    for k, p in params.items():
        if tuple(out[k].shape) != tuple(p.shape):
            raise ValueError(f"{name}[{k!r}] must have shape {tuple(p.shape)}, got {out[k].shape}")
    return out


def _nonfinite_error(grads: Params, name: str) -> FloatingPointError:
    xp = array_namespace(*grads.values())
    for k, g in grads.items():
        bad = ~xp.isfinite(g)
        if bool(bad.any()):
            index = tuple(int(i[0]) for i in xp.nonzero(bad))
            value = float(g[index]) if index else float(g)
            kind = "NaN" if math.isnan(value) else "Inf"
            return FloatingPointError(
                f"{name} of parameter {k!r} is not finite ({kind} at index {index}, "
                f"{int(bad.sum())} of {g.size} entries); the loss or its gradient overflowed: "
                "lower the learning rate, set clip_norm, or use stronger forcing (larger alpha)"
            )
    return FloatingPointError(f"{name} is not finite")  # pragma: no cover - defensive


def _norm_parts(grads: Params, name: str) -> tuple[float, float]:
    """(scale, sum of squares of grads/scale), raising ``FloatingPointError`` on NaN/Inf.

    Scaling by the largest magnitude keeps the sum of squares from overflowing; the norm is
    ``scale * sqrt(sumsq)``. Two host transfers in all, whatever the number of arrays.
    """
    arrays = list(grads.values())
    if not arrays:
        return 0.0, 0.0
    xp = array_namespace(*arrays)
    amax = to_numpy(
        xp.stack([xp.max(xp.abs(g)) if g.size else xp.zeros((), g.dtype) for g in arrays])
    )
    if not np.all(np.isfinite(amax)):  # max propagates NaN, and Inf is its own maximum
        raise _nonfinite_error(grads, name)
    scale = float(amax.max())
    if scale == 0.0:
        return 0.0, 0.0
    sumsq = float(to_numpy(xp.stack([xp.sum((g / scale) ** 2) for g in arrays])).sum())
    return scale, sumsq


def global_norm(grads: Params) -> float:
    r"""The global Euclidean norm :math:`\|g\| = \big(\sum_k \|g_k\|_F^2\big)^{1/2}`.

    Computed with scaling so that it does not overflow before the norm itself does.

    Raises
    ------
    FloatingPointError
        If an array holds NaN or Inf (the message names the parameter).
    """
    scale, sumsq = _norm_parts(grads, "gradient")
    return scale * math.sqrt(sumsq)


def _clip(grads: Params, max_norm: float, name: str) -> tuple[Params, float]:
    scale, sumsq = _norm_parts(grads, name)
    norm = scale * math.sqrt(sumsq)
    if norm <= max_norm:
        return grads, norm
    factor = (max_norm / scale) / math.sqrt(sumsq)  # = max_norm / norm, overflow-free
    return grads.map(lambda g: g * factor), norm


def clip_by_global_norm(grads: Params, max_norm: float) -> tuple[Params, float]:
    r"""Rescale gradients to global norm at most ``max_norm``: :math:`g \min(1, c/\|g\|)`.

    Parameters
    ----------
    grads
        The gradients.
    max_norm
        The largest allowed global norm :math:`c > 0`.

    Returns
    -------
    clipped, norm
        The (possibly rescaled) gradients and the global norm *before* clipping. Gradients
        within the bound are returned unchanged (the same arrays).

    Raises
    ------
    FloatingPointError
        If a gradient holds NaN or Inf; the message names the parameter.
    """
    max_norm = positive_finite(max_norm, "max_norm")
    if not isinstance(grads, Params):
        grads = Params(grads)
    return _clip(grads, max_norm, "gradient")
