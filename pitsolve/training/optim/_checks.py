"""Argument checks shared by the schedules, the gradient helpers and the optimisers."""

from __future__ import annotations

import math
import numbers
from typing import Any

__all__ = ["positive_finite"]


def positive_finite(value: Any, name: str) -> float:
    """``value`` as a float, finite and > 0 (``TypeError``/``ValueError`` naming it)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a positive number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not (value > 0 and math.isfinite(value)):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return value
