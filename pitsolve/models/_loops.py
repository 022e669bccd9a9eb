r"""The compiled-loop dispatch, written once for every model.

A model with compiled loops over time implements two hooks on flat, C-contiguous NumPy
arrays in one dtype:

``_loop(H0, X, Z, A, T)``
    the states ``(B, T, D)`` of :math:`h_t = f(h_{t-1}, x_t)` from ``H0 (B, D)`` with inputs
    ``X (B, T, N_x)`` (or None); with ``Z``, ``A`` ``(B, T, D)`` (or None) the forced
    recurrence :math:`\tilde h_t = (1 - a_t) \odot f(\tilde h_{t-1}, x_t) + a_t \odot \hat z_t`.
``_loop_bptt(H0, X, S, G, Z, A)``
    backpropagation through time along the states ``S`` with cotangents ``G``:
    ``(params_bar, h0_bar (B, D), x_bar (B, T, N_x) or None, zhat_bar, a_bar)`` (the last two
    None without forcing).

Either may return None for a case it does not compile (e.g. forcing), which then takes the
generic loops. :func:`run_loop` and :func:`run_loop_bptt` do what every model did for itself
before: ask the model's backend whether compiled kernels run (never the array types), check
and flatten the arguments to the batch shape they broadcast to, call the hook and give the
results the arguments' shapes back.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["bptt_shapes", "check_inputs", "cotangent_like", "run_loop", "run_loop_bptt",
           "sum_to"]

_FLOATS = (np.dtype(np.float32), np.dtype(np.float64))


def bptt_shapes(D: int, h0: Any, inputs: Any, states: Any, g: Any) -> tuple[int, tuple]:
    """``(T, lead)`` of the arguments of :meth:`Model.bptt`, checked: states and g
    ``(..., T, D)``, h0 ``(..., D)``, inputs ``(..., T' ≥ T, N_x)`` or None; ``lead`` is
    their broadcast batch shape. Raises ValueError naming the argument otherwise."""
    if states.ndim < 2 or states.shape[-1] != D:
        raise ValueError(f"states must have shape (..., T, {D}), got {states.shape}")
    T = states.shape[-2]
    if g.shape[-2:] != states.shape[-2:]:
        raise ValueError(f"g must have shape (..., {T}, {D}), got {g.shape}")
    if h0.ndim < 1 or h0.shape[-1] != D:
        raise ValueError(f"h0 must have shape (..., {D}), got {h0.shape}")
    shapes = [states.shape[:-2], g.shape[:-2], h0.shape[:-1]]
    if inputs is not None:
        if inputs.ndim < 2 or inputs.shape[-2] < T:
            raise ValueError(f"inputs must have shape (..., T≥{T}, N_x), got {inputs.shape}")
        shapes.append(inputs.shape[:-2])
    return T, tuple(np.broadcast_shapes(*shapes))


def check_inputs(model: Any, x: Any) -> Any:
    """``x`` if the model has inputs (then required), else ``None``."""
    if model.input_dim == 0:
        if x is not None and x.shape[-1] != 0:
            raise ValueError(f"{type(model).__name__} has no inputs; got x of shape {x.shape}")
        return None
    if x is None:
        raise ValueError(f"{type(model).__name__} needs inputs x of size {model.input_dim}")
    return x


def sum_to(a: Any, shape: tuple[int, ...]) -> Any:
    """``a`` summed over the axes along which ``shape`` was broadcast to ``a.shape``."""
    if a.ndim > len(shape):
        a = a.sum(axis=tuple(range(a.ndim - len(shape))))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and a.shape[i] != 1)
    return a.sum(axis=axes, keepdims=True) if axes else a


def cotangent_like(xp: Any, bar: Any, like: Any) -> Any:
    """The cotangent ``bar (*lead, T, n)`` of the first T steps of ``like (..., T' ≥ T, n)``
    (broadcast to ``lead``), zero-padded to T' steps and summed to the shape of ``like``."""
    T = bar.shape[-2]
    if bar.shape[-2:] != like.shape[-2:]:
        full = xp.zeros((*bar.shape[:-2], *like.shape[-2:]), dtype=bar.dtype)
        full[..., :T, :] = bar
        bar = full
    return sum_to(bar, like.shape)


def _check_forcing(model: Any, zhat: Any, a: Any, T: int) -> None:
    D = model.state_dim
    for name, arr in (("zhat", zhat), ("a", a)):
        if arr.ndim < 2 or arr.shape[-1] != D or arr.shape[-2] < T:
            raise ValueError(f"{name} must have shape (..., T≥{T}, {D}), got {arr.shape}")


def _flat_steps(x: Any, lead: tuple, T: int, dtype: Any) -> np.ndarray:
    """The first T steps of ``x (..., T' ≥ T, n)`` broadcast to ``lead``, as a C-contiguous
    ``(B, T, n)`` array of ``dtype``."""
    x = np.broadcast_to(x[..., :T, :].astype(dtype, copy=False), (*lead, T, x.shape[-1]))
    return np.ascontiguousarray(x.reshape(-1, T, x.shape[-1]))


def _compiled(model: Any, hook: str, *arrays: Any) -> Any:
    """The model's hook if it has one and its backend runs compiled kernels, else None."""
    fn = getattr(model, hook, None)
    if fn is None or not model._backend_for(*arrays).compiled:
        return None
    return fn


def run_loop(model: Any, h0: Any, inputs: Any, T: int, zhat: Any = None,
             a: Any = None) -> Any:
    """The model's compiled ``_loop`` on the (forced, with ``zhat`` and ``a``) recurrence:
    states ``(*lead, T, D)`` in the dtype of ``h0``, or None where the generic loop runs."""
    loop = _compiled(model, "_loop", h0, inputs, zhat, a)
    if loop is None or np.dtype(h0.dtype) not in _FLOATS:
        return None
    if isinstance(T, bool) or not isinstance(T, (int, np.integer)) or T < 0:
        raise ValueError(f"T must be an integer ≥ 0 (the number of steps), got {T!r}")
    T = int(T)
    D = model.state_dim
    if h0.ndim < 1 or h0.shape[-1] != D:
        raise ValueError(f"h0 must have shape (..., {D}), got {h0.shape}")
    inputs = check_inputs(model, inputs)
    shapes = [h0.shape[:-1]]
    if inputs is not None:
        if inputs.ndim < 2 or inputs.shape[-2] < T:
            raise ValueError(f"inputs must have shape (..., T≥{T}, N_x), got {inputs.shape}")
        shapes.append(inputs.shape[:-2])
    if zhat is not None:
        _check_forcing(model, zhat, a, T)
        shapes += [zhat.shape[:-2], a.shape[:-2]]
    lead = tuple(np.broadcast_shapes(*shapes))
    H0 = np.ascontiguousarray(np.broadcast_to(h0, (*lead, D)).reshape(-1, D))
    X = None if inputs is None else _flat_steps(inputs, lead, T, h0.dtype)
    Z = A = None
    if zhat is not None:
        Z, A = _flat_steps(zhat, lead, T, h0.dtype), _flat_steps(a, lead, T, h0.dtype)
    out = np.empty((H0.shape[0], 0, D), dtype=h0.dtype) if T == 0 else loop(H0, X, Z, A, T)
    return None if out is None else out.reshape(*lead, T, D)


def run_loop_bptt(model: Any, h0: Any, inputs: Any, states: Any, g: Any, zhat: Any = None,
                  a: Any = None) -> tuple | None:
    """The model's compiled ``_loop_bptt``: ``(params_bar, h0_bar, inputs_bar)`` in the shapes
    of the arguments (and ``zhat_bar``, ``a_bar`` with forcing), computed in the dtype of
    ``states``; or None where the generic loop runs."""
    bptt = _compiled(model, "_loop_bptt", h0, inputs, states, g, zhat, a)
    if bptt is None or np.dtype(states.dtype) not in _FLOATS:
        return None
    D, dt = model.state_dim, states.dtype
    T, lead = bptt_shapes(D, h0, inputs, states, g)
    if zhat is not None:
        _check_forcing(model, zhat, a, T)
        lead = tuple(np.broadcast_shapes(lead, zhat.shape[:-2], a.shape[:-2]))
    H0 = np.ascontiguousarray(
        np.broadcast_to(h0.astype(dt, copy=False), (*lead, D)).reshape(-1, D))
    X = None if inputs is None else _flat_steps(inputs, lead, T, dt)
    S, G = _flat_steps(states, lead, T, dt), _flat_steps(g, lead, T, dt)
    Z = A = None
    if zhat is not None:
        Z, A = _flat_steps(zhat, lead, T, dt), _flat_steps(a, lead, T, dt)
    result = bptt(H0, X, S, G, Z, A)
    if result is None:
        return None
    params_bar, h0_bar, x_bar, zhat_bar, a_bar = result
    h0_bar = sum_to(h0_bar.reshape(*lead, D), h0.shape)
    inputs_bar = None
    if inputs is not None:
        if x_bar is None:
            inputs_bar = np.zeros(inputs.shape, dtype=dt)
        else:
            inputs_bar = cotangent_like(np, x_bar.reshape(*lead, T, inputs.shape[-1]), inputs)
    if zhat is None:
        return params_bar, h0_bar, inputs_bar
    zb = cotangent_like(np, zhat_bar.reshape(*lead, T, D), zhat)
    ab = cotangent_like(np, a_bar.reshape(*lead, T, D), a)
    return params_bar, h0_bar, inputs_bar, zb, ab
