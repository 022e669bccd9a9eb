r"""Delay embedding of an observed series (Takens): more coordinates from fewer observations.

A series :math:`x_t \in \mathbb{R}^N` observed through too few coordinates to hold the
attractor (one voltage, one position) is embedded in :math:`\mathbb{R}^{dN}` by stacking
delayed copies,

.. math::

    y_t = \bigl[x_t,\ x_{t-\tau},\ x_{t-2\tau},\ \dots,\ x_{t-(d-1)\tau}\bigr],
    \qquad t = (d-1)\tau, \dots, T-1,

with embedding dimension :math:`d` and lag :math:`\tau` (in steps). For a generic observation
of a flow with an attractor of box-counting dimension :math:`D_0`, :math:`d N > 2 D_0` makes
the map from states to :math:`y_t` an embedding (Takens 1981; Sauer, Yorke & Casdagli 1991).
The first :math:`(d-1)\tau` steps have no complete history and are dropped.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

__all__ = ["delay_embed", "rows_lost"]


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")
    return int(value)


def rows_lost(dim: int, lag: int) -> int:
    r""":math:`(d-1)\tau`, the rows :func:`delay_embed` drops (``ValueError`` naming ``dim``
    or ``lag`` unless both are positive integers)."""
    return (_positive_int(dim, "dim") - 1) * _positive_int(lag, "lag")


def delay_embed(x: Any, dim: int, lag: int) -> np.ndarray:
    r"""The delay embedding :math:`y_t = [x_t, x_{t-\tau}, \dots, x_{t-(d-1)\tau}]` of ``x``.

    Parameters
    ----------
    x : ``(T, N)`` series (or ``(T,)``, one observed dimension).
    dim : the embedding dimension :math:`d \ge 1` (copies of every column; 1 returns ``x``).
    lag : the delay :math:`\tau \ge 1` in steps.

    Returns
    -------
    ``(T - (d-1)τ, d·N)`` array, row ``i`` for time :math:`t = i + (d-1)\tau`: column
    :math:`kN + n` is :math:`x_{t-k\tau,\,n}`. The first N columns are the current observation
    :math:`x_t`, so a model whose first N latent units are observed reads the data there.

    Raises
    ------
    ValueError
        For ``dim`` or ``lag`` not a positive integer (naming the argument), ``x`` not 1-D
        or 2-D, or a series no longer than :math:`(d-1)\tau` steps.
    """
    lost = rows_lost(dim, lag)
    dim, lag = int(dim), int(lag)
    x = np.asarray(x)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"x must have shape (T, N) or (T,), got {x.shape}")
    T = x.shape[0]
    if T <= lost:
        raise ValueError(f"x has {T} time steps; dim={dim}, lag={lag} need more than "
                         f"(dim-1)·lag = {lost}")
    return np.concatenate([x[lost - k * lag : T - k * lag] for k in range(dim)], axis=1)
