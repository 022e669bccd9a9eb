"""Helpers shared by the built-in models (rnn, ssm, ode, plrnn): dtypes, parameter checks,
cached parameter layouts and broadcasting sums. (The compiled loops' argument set-up lives
in ``pitsolve.models._loops``.)"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np


def _compute_dtype(*arrays: Any) -> np.dtype:
    """The dtype the model computes in: that of its array arguments (float32 or float64)."""
    return np.result_type(*[a.dtype for a in arrays if a is not None])


def _arrays(obj: Any, xp: Any, dtype: Any) -> dict[str, Any]:
    """``obj.params`` as ``xp`` arrays of ``dtype``, cached per (namespace, dtype)."""
    dtype = np.dtype(dtype)
    key = f"params:{xp.__name__}:{dtype.str}"
    return obj.cached(key, lambda: {k: xp.asarray(v, dtype=dtype) for k, v in obj.params.items()})


def _derived(obj: Any, name: str, xp: Any, dtype: Any, compute: Any) -> Any:
    """A parameter-derived array ``compute(p)`` cached per (namespace, dtype)."""
    dtype = np.dtype(dtype)
    key = f"{name}:{xp.__name__}:{dtype.str}"
    return obj.cached(key, lambda: compute(_arrays(obj, xp, dtype)))


def _sigmoid(xp: Any, a: Any) -> Any:
    r""":math:`\sigma(a) = 1/(1+e^{-a})`, evaluated without overflow for any ``a``."""
    e = xp.exp(-xp.abs(a))
    s = 1 / (1 + e)
    return xp.where(a >= 0, s, e * s)


def _outer_sum(xp: Any, g: Any, a: Any) -> Any:
    r""":math:`\sum_{\ldots} g \otimes a` over all leading (broadcast) axes: ``(G, A)``."""
    lead = np.broadcast_shapes(g.shape[:-1], a.shape[:-1])
    g = xp.broadcast_to(g, (*lead, g.shape[-1])).reshape(-1, g.shape[-1])
    a = xp.broadcast_to(a, (*lead, a.shape[-1])).reshape(-1, a.shape[-1])
    return xp.matmul(g.T, a)


def _lead_sum(xp: Any, g: Any) -> Any:
    """Sum over all leading axes: ``(..., n) -> (n,)``."""
    return g.reshape(-1, g.shape[-1]).sum(axis=0)


def _broadcast_lead(xp: Any, a: Any, *others: Any) -> Any:
    """``a`` broadcast (as a fresh array) to the leading axes it shares with ``others``."""
    lead = np.broadcast_shapes(a.shape[:-1], *[o.shape[:-1] for o in others if o is not None])
    if tuple(lead) == tuple(a.shape[:-1]):
        return a
    return xp.broadcast_to(a, (*lead, a.shape[-1])).copy()


def _check_dtype(dtype: Any) -> np.dtype | None:
    if dtype is None:
        return None
    dt = np.dtype(dtype)
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    return dt


def _check_inputs_count(n: Any, name: str = "inputs", *, allow_zero: bool = True) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise TypeError(f"{name} must be an integer, got {type(n).__name__} {n!r}")
    if n < (0 if allow_zero else 1):
        bound = "≥ 0" if allow_zero else "≥ 1"
        raise ValueError(f"{name} must be an integer {bound}, got {n}")
    return int(n)


def _given_params(
    cls_name: str,
    params: Mapping[str, Any],
    shapes: dict[str, tuple[int, ...]],
    dtype: np.dtype | None,
) -> dict[str, np.ndarray]:
    """Explicit parameters: exactly the names in ``shapes``, with those shapes, cast to dtype
    (``None``: their common float dtype if all are float32/float64, else float64)."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a mapping of names to arrays, got {type(params).__name__}")
    names, given = list(shapes), set(params)
    if given != set(names):
        missing, extra = sorted(set(names) - given), sorted(given - set(names))
        raise ValueError(
            f"{cls_name} params must have exactly the names {names}; "
            f"missing {missing}, unexpected {extra}"
        )
    if dtype is None:
        kinds = {np.dtype(getattr(params[k], "dtype", np.float64)) for k in names}
        dtype = np.dtype(np.float32) if kinds == {np.dtype(np.float32)} else np.dtype(np.float64)
    out = {}
    for k in names:
        v = params[k]
        shape = tuple(getattr(v, "shape", np.shape(v)))
        if shape != shapes[k]:
            raise ValueError(f"params[{k!r}] must have shape {shapes[k]}, got {shape}")
        if hasattr(v, "dtype") and np.dtype(v.dtype).kind not in "fiu":
            raise TypeError(f"params[{k!r}] must be a float array, got dtype {v.dtype}")
        out[k] = v.astype(dtype) if hasattr(v, "astype") else np.asarray(v, dtype=dtype)
    return out
