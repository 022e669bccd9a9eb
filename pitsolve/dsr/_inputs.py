"""Input handling shared by the DSR measures (:mod:`pitsolve.dsr.metrics`,
:mod:`pitsolve.dsr.lyapunov`): host transfer and the checks that name the argument."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._validation import check_positive_int

__all__ = ["CHUNK_ELEMENTS", "autonomous", "host", "positive_float"]

CHUNK_ELEMENTS = 1 << 21  # bound on the temporaries of GMM distances and batched Jacobians


def host(x: Any) -> Any:
    """A CuPy array copied to the host; anything else unchanged."""
    get = getattr(x, "get", None)
    return get() if callable(get) and not isinstance(x, np.ndarray) else x


def positive_float(v: Any, name: str) -> float:
    """``v`` as a float, finite and > 0 (``ValueError`` naming the argument)."""
    f = float(v)
    if not math.isfinite(f) or f <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {v!r}")
    return f


def autonomous(model: Any) -> int:
    """``model.state_dim`` of a model without inputs."""
    if getattr(model, "input_dim", 0):
        raise ValueError(f"model must be autonomous (input_dim = 0), got {model.input_dim}")
    return check_positive_int(model.state_dim, "model.state_dim")
