"""Deprecated: the observation models moved to :mod:`pitsolve.models` (``Identity``,
``Affine``, ``ObservationModel``, ``ObservedModel``, ``split_observed``); the old spellings
work for one release with a :class:`DeprecationWarning`."""

from __future__ import annotations

import warnings
from typing import Any

from ..models import observed as _observed

_MOVED = ("PREFIX", "Affine", "Identity", "ObservationModel", "ObservedModel", "split_observed")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(f"pitsolve.training.observation.{name} moved to pitsolve.models.{name}",
                      DeprecationWarning, stacklevel=2)
        return getattr(_observed, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
