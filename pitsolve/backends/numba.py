"""The Numba backend: NumPy arrays, compiled CPU kernels (the default on NumPy arrays).

The scans are the blocked (and split) Numba kernels of :mod:`pitsolve.kernels.numba_scan`,
the Newton iterations' reductions the fused one-pass kernels of
:mod:`pitsolve.kernels.residual` and :mod:`pitsolve.kernels.update`, the Levenberg–Marquardt
covariances the compiled Riccati recursion, and models evaluate with their compiled kernels
(``compiled = True``). ``method="logdepth"`` scans run the NumPy twin.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from ..kernels import residual, update
from .base import Backend

__all__ = ["NumbaBackend"]


class NumbaBackend(Backend):
    """NumPy arrays, Numba kernels."""

    name: ClassVar[str] = "numba"
    compiled: ClassVar[bool] = True
    scan_kernels: ClassVar[dict[str, str]] = {
        "blocked": "numba", "logdepth": "logdepth", "sequential": "numba-sequential",
    }

    def residual_norms(self, h: Any, f: Any, atol: float, rtol: float,
                       out: Any = None) -> tuple[np.ndarray, np.ndarray, int]:
        err, q, first = residual.residual_norms(h, f, atol, rtol, out)
        return self._host_norms(err), self._host_norms(q), first

    def apply_step(self, h: Any, delta: Any) -> tuple[bool, float, float]:
        return update.apply_step(h, delta)

    def step_size(self, new: Any, old: Any) -> tuple[bool, float, float]:
        return update.step_size(new, old)

    def all_finite(self, x: Any) -> bool:
        return update.all_finite(x)
