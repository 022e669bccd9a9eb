r"""Helpers shared by the built-in models (rnn, ssm, ode, plrnn): dtypes, parameter checks,
broadcasting, the compiled loops' argument set-up and BPTT results, and teacher forcing
(the forced recurrence :math:`\tilde z_t = (1 - a_t) \odot f(\tilde z_{t-1}, x_t) + a_t \odot
\hat z_t`) for models without a compiled forced loop.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .._validation import check_positive_int
from ..backends import array_namespace
from .base import Model, Params, bptt_shapes, step_loop

# -- helpers shared by the built-in models (rnn, ssm, ode) ------------------------------------


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


def _check_x(model: Model, x: Any) -> Any:
    """``x`` if the model has inputs (then required), else ``None``."""
    if model.input_dim == 0:
        if x is not None and x.shape[-1] != 0:
            raise ValueError(f"{type(model).__name__} has no inputs; got x of shape {x.shape}")
        return None
    if x is None:
        raise ValueError(f"{type(model).__name__} needs inputs x of size {model.input_dim}")
    return x


def _sequential_setup(model: Model, h0: Any, inputs: Any, T: int) -> tuple[Any, Any, tuple]:
    """Validate and flatten ``h0`` to ``(B, D)`` and ``inputs`` to ``(B, T, N_x)`` or None."""
    T = check_positive_int(T, "T")
    if h0.shape[-1] != model.state_dim:
        raise ValueError(f"h0 must have last axis {model.state_dim}, got shape {h0.shape}")
    inputs = _check_x(model, inputs)
    lead = tuple(h0.shape[:-1])
    if inputs is not None:
        if inputs.ndim < 2 or inputs.shape[-2] < T:
            raise ValueError(f"inputs must have shape (..., T≥{T}, N_x), got {inputs.shape}")
        inputs = inputs[..., :T, :].astype(h0.dtype, copy=False)
        lead = tuple(np.broadcast_shapes(lead, inputs.shape[:-2]))
        inputs = np.broadcast_to(inputs, (*lead, *inputs.shape[-2:])).reshape(
            -1, T, inputs.shape[-1]
        )
    H0 = np.ascontiguousarray(np.broadcast_to(h0, (*lead, h0.shape[-1])).reshape(-1, h0.shape[-1]))
    return H0, inputs, lead


def _bptt_arrays(model: Model, h0: Any, inputs: Any, states: Any, g: Any) -> Any:
    """The arguments of ``bptt`` flattened for a compiled kernel, or None if they need the
    generic method (not all NumPy arrays, or not float32/float64 states).

    Returns ``(H0 (B, D), X (B, T, N_x) or None, S (B, T, D), G (B, T, D), lead)``, each
    C-contiguous in the dtype of ``states``; ``lead`` is the broadcast batch shape.
    """
    arrays = [a for a in (h0, inputs, states, g) if a is not None]
    if not all(isinstance(a, np.ndarray) for a in arrays):
        return None
    if states.dtype not in (np.float32, np.float64):
        return None
    dt, D = states.dtype, model.state_dim
    T, lead = bptt_shapes(D, h0, inputs, states, g)

    def flat(a: Any, tail: tuple[int, ...]) -> np.ndarray:
        a = np.broadcast_to(a.astype(dt, copy=False), (*lead, *tail))
        return np.ascontiguousarray(a.reshape(-1, *tail))

    X = None if inputs is None else flat(inputs[..., :T, :], (T, inputs.shape[-1]))
    return flat(h0, (D,)), X, flat(states, (T, D)), flat(g, (T, D)), lead


def _sum_to(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """``a`` summed over the axes along which ``shape`` was broadcast to ``a.shape``."""
    if a.ndim > len(shape):
        a = a.sum(axis=tuple(range(a.ndim - len(shape))))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and a.shape[i] != 1)
    return a.sum(axis=axes, keepdims=True) if axes else a


def _bptt_result(
    params_bar: Params, h0_bar: np.ndarray, x_bar: Any, lead: tuple, h0: Any, inputs: Any
) -> tuple[Params, np.ndarray, Any]:
    """``(params_bar, h0_bar, inputs_bar)`` from a kernel's flat ``h0_bar (B, D)`` and
    ``x_bar (B, T, N_x)``, reshaped and summed to the shapes of ``h0`` and ``inputs``."""
    h0_bar = _sum_to(h0_bar.reshape(*lead, h0_bar.shape[-1]), h0.shape)
    if inputs is None:
        return params_bar, h0_bar, None
    if x_bar is None:
        return params_bar, h0_bar, np.zeros(inputs.shape, dtype=h0_bar.dtype)
    x_bar = x_bar.reshape(*lead, x_bar.shape[1], inputs.shape[-1])
    return params_bar, h0_bar, _cotangent_like(np, x_bar, inputs)


def _cotangent_like(xp: Any, bar: Any, like: Any) -> Any:
    """The cotangent ``bar (*lead, T, n)`` of the first T steps of ``like (..., T' ≥ T, n)``
    (broadcast to ``lead``), zero-padded to T' steps and summed to the shape of ``like``."""
    T = bar.shape[-2]
    if bar.shape[-2:] != like.shape[-2:]:
        full = xp.zeros((*bar.shape[:-2], *like.shape[-2:]), dtype=bar.dtype)
        full[..., :T, :] = bar
        bar = full
    return _sum_to(bar, like.shape)


# -- teacher forcing: the forced recurrence z̃_t = (1 - a_t) ⊙ f(z̃_{t-1}, x_t) + a_t ⊙ ẑ_t ------
#
# Built-in models step it in their compiled loops (``sequential_forced``, ``bptt_forced``): the
# kernels take the forcing arrays ``zhat``, ``a`` flattened to ``(B, T, D)``, or None for the
# plain recurrence (a separate compiled specialisation, the forced branches pruned). Other
# arrays (CuPy, ...) take the generic loops of :class:`~pitsolve.training.forcing.ForcedModel`.


def _empty_like(x: np.ndarray | None) -> np.ndarray | None:
    """An uninitialised array like ``x`` (the cotangent buffers of ``zhat``, ``a``), or None."""
    return None if x is None else np.empty_like(x)


def _check_forcing(model: Model, zhat: Any, a: Any, T: int) -> None:
    D = model.state_dim
    for name, arr in (("zhat", zhat), ("a", a)):
        if arr.ndim < 2 or arr.shape[-1] != D or arr.shape[-2] < T:
            raise ValueError(f"{name} must have shape (..., T≥{T}, {D}), got {arr.shape}")


def _forced_setup(
    model: Model, h0: np.ndarray, inputs: Any, zhat: np.ndarray, a: np.ndarray, T: int
) -> tuple[np.ndarray, Any, np.ndarray, np.ndarray, tuple]:
    """The arguments of ``sequential_forced`` on NumPy arrays: ``h0`` and ``inputs`` broadcast
    to the batch shape ``lead`` common to all four, and ``zhat``, ``a`` (first T steps) as
    C-contiguous ``(B, T, D)`` arrays in the dtype of ``h0``."""
    D = model.state_dim
    if h0.ndim < 1 or h0.shape[-1] != D:
        raise ValueError(f"h0 must have shape (..., {D}), got {h0.shape}")
    _check_forcing(model, zhat, a, T)
    shapes = [h0.shape[:-1], zhat.shape[:-2], a.shape[:-2]]
    with_x = inputs is not None and inputs.ndim >= 2  # else left to the caller's checks
    if with_x:
        shapes.append(inputs.shape[:-2])
    lead = tuple(np.broadcast_shapes(*shapes))
    if with_x:
        inputs = np.broadcast_to(inputs, (*lead, *inputs.shape[-2:]))

    def flat(x: np.ndarray) -> np.ndarray:
        x = np.broadcast_to(x[..., :T, :].astype(h0.dtype, copy=False), (*lead, T, D))
        return np.ascontiguousarray(x.reshape(-1, T, D))

    return np.broadcast_to(h0, (*lead, D)), inputs, flat(zhat), flat(a), lead


def _bptt_forced_arrays(
    model: Model, h0: Any, inputs: Any, zhat: Any, a: Any, states: Any, g: Any
) -> Any:
    """:func:`_bptt_arrays` with the forcing arrays: ``(H0, X, S, G, Z, A, lead)`` (``Z``, ``A``
    ``(B, T, D)`` C-contiguous in the dtype of ``states``), or None for the generic method."""
    if not all(isinstance(x, np.ndarray) for x in (h0, zhat, a)):
        return None
    D = model.state_dim
    if h0.ndim < 1 or h0.shape[-1] != D:
        raise ValueError(f"h0 must have shape (..., {D}), got {h0.shape}")
    if states.ndim < 2:
        raise ValueError(f"states must have shape (..., T, {D}), got {states.shape}")
    T = states.shape[-2]
    _check_forcing(model, zhat, a, T)
    lead = np.broadcast_shapes(h0.shape[:-1], zhat.shape[:-2], a.shape[:-2])
    flat = _bptt_arrays(model, np.broadcast_to(h0, (*lead, D)), inputs, states, g)
    if flat is None:
        return None
    H0, X, S, G, lead = flat

    def forcing(x: np.ndarray) -> np.ndarray:
        x = np.broadcast_to(x[..., :T, :].astype(S.dtype, copy=False), (*lead, T, D))
        return np.ascontiguousarray(x.reshape(-1, T, D))

    return H0, X, S, G, forcing(zhat), forcing(a), lead


def _bptt_forced_result(
    params_bar: Params,
    h0_bar: np.ndarray,
    x_bar: Any,
    zhat_bar: np.ndarray,
    a_bar: np.ndarray,
    lead: tuple,
    h0: Any,
    inputs: Any,
    zhat: Any,
    a: Any,
) -> tuple[Params, np.ndarray, Any, np.ndarray, np.ndarray]:
    """:func:`_bptt_result` plus the cotangents of ``zhat`` and ``a`` in their shapes."""
    pb, hb, xb = _bptt_result(params_bar, h0_bar, x_bar, lead, h0, inputs)
    T, D = zhat_bar.shape[1:]
    zb = _cotangent_like(np, zhat_bar.reshape(*lead, T, D), zhat)
    ab = _cotangent_like(np, a_bar.reshape(*lead, T, D), a)
    return pb, hb, xb, zb, ab


def _forced_inputs(xp: Any, inputs: Any, zhat: Any, a: Any, T: int) -> Any:
    """``[x_t, ẑ_t, a_t]`` for t < T, broadcast and concatenated: the inputs of the
    :class:`~pitsolve.training.forcing.ForcedModel` of a model."""
    parts = [x[..., :T, :] for x in (inputs, zhat, a) if x is not None]
    lead = np.broadcast_shapes(*[x.shape[:-2] for x in parts])
    return xp.concatenate([xp.broadcast_to(x, (*lead, *x.shape[-2:])) for x in parts], axis=-1)


def _generic_sequential_forced(
    model: Model, h0: Any, inputs: Any, zhat: Any, a: Any, T: int
) -> Any:
    """``sequential_forced`` as a Python loop of the forced step (any array namespace)."""
    from ..training.forcing import ForcedModel  # training sits above models

    xp = array_namespace(h0, inputs, zhat, a)
    T = int(T)
    _check_forcing(model, zhat, a, T)
    X = _forced_inputs(xp, inputs, zhat, a, T)
    lead = np.broadcast_shapes(h0.shape[:-1], X.shape[:-2])
    h0 = xp.broadcast_to(h0, (*lead, h0.shape[-1]))
    return step_loop(ForcedModel(model), h0, xp.broadcast_to(X, (*lead, *X.shape[-2:])), T)


def _generic_bptt_forced(
    model: Model, h0: Any, inputs: Any, zhat: Any, a: Any, states: Any, g: Any
) -> tuple[Params, Any, Any, Any, Any]:
    """``bptt_forced`` by the generic :meth:`Model.bptt` of the forced model (any namespace)."""
    from ..training.forcing import ForcedModel  # training sits above models

    xp = array_namespace(h0, inputs, zhat, a, states, g)
    T = states.shape[-2]
    _check_forcing(model, zhat, a, T)
    X = _forced_inputs(xp, inputs, zhat, a, T)
    params_bar, h0_bar, X_bar = Model.bptt(ForcedModel(model), h0, X, states, g)
    n, D = model.input_dim, model.state_dim
    inputs_bar = None if inputs is None else _cotangent_like(xp, X_bar[..., :n], inputs)
    zhat_bar = _cotangent_like(xp, X_bar[..., n : n + D], zhat)
    a_bar = _cotangent_like(xp, X_bar[..., n + D :], a)
    return params_bar, h0_bar, inputs_bar, zhat_bar, a_bar
