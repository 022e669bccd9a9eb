r"""Learning-rate schedules :math:`\eta(s)`, ``lr(step)`` for ``step = 0, 1, 2, ...``
optimiser updates: a number becomes :class:`Constant`; :class:`ExponentialDecay` is the
schedule of the GTF reference training."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, Protocol

import numpy as np

from ._checks import positive_finite

__all__ = ["Constant", "ExponentialDecay", "Schedule", "as_schedule"]


class Schedule(Protocol):
    """A learning-rate schedule: ``lr(step)`` for ``step = 0, 1, 2, ...`` optimiser updates."""

    def __call__(self, step: int) -> float: ...  # pragma: no cover - protocol


def _check_step(step: Any) -> int:
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)):
        raise TypeError(f"step must be an integer, got {type(step).__name__} {step!r}")
    if step < 0:
        raise ValueError(f"step must be ≥ 0, got {step}")
    return int(step)


@dataclasses.dataclass(frozen=True)
class Constant:
    r"""The constant schedule :math:`\eta(s) = \eta`."""

    lr: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr", positive_finite(self.lr, "lr"))

    def __call__(self, step: int) -> float:
        _check_step(step)
        return self.lr


@dataclasses.dataclass(frozen=True, kw_only=True)
class ExponentialDecay:
    r"""Exponential decay :math:`\eta(s) = \eta_0\,(\eta_1/\eta_0)^{\min(s, S)/S}`.

    The learning rate falls geometrically from ``lr_start`` (step 0) to ``lr_end`` (step
    ``steps`` = S) and stays there; halfway it is the geometric mean
    :math:`\sqrt{\eta_0\eta_1}`. This is the schedule of the GTF reference training
    (1e-3 → 1e-6), evaluated per optimiser update rather than per epoch.
    """

    lr_start: float = 1e-3
    lr_end: float = 1e-6
    steps: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "lr_start", positive_finite(self.lr_start, "lr_start"))
        object.__setattr__(self, "lr_end", positive_finite(self.lr_end, "lr_end"))
        if isinstance(self.steps, bool) or not isinstance(self.steps, (int, np.integer)):
            raise TypeError(f"steps must be a positive integer, got {self.steps!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be ≥ 1, got {self.steps}")
        object.__setattr__(self, "steps", int(self.steps))

    def __call__(self, step: int) -> float:
        s = min(_check_step(step), self.steps)
        if s == self.steps:  # exact end value, free of rounding in the power
            return self.lr_end
        return self.lr_start * (self.lr_end / self.lr_start) ** (s / self.steps)


def as_schedule(lr: float | Schedule) -> Schedule:
    """``lr`` as a schedule: a number becomes :class:`Constant`, a callable is returned as is."""
    if isinstance(lr, numbers.Real) and not isinstance(lr, bool):
        return Constant(float(lr))
    if callable(lr):
        return lr
    raise TypeError(
        f"lr must be a positive number or a schedule callable lr(step) -> float, "
        f"got {type(lr).__name__} {lr!r}"
    )
