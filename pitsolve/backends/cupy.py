"""The CuPy backend: CuPy arrays on a CUDA device.

With ``numba-cuda`` installed (the ``gpu`` extras) the scans, the Newton iterations'
reductions and the built-in models' f and Jacobian run as the CUDA kernels of
:mod:`pitsolve.kernels.cuda` (launched on the CuPy arrays, on CuPy's current stream);
without it, and for what has no kernel (dense scans with D > 64, ``method="logdepth"``,
the Kalman smoother's covariances, GMRES), the array-namespace reference of
:class:`~pitsolve.backends.base.Backend` runs on CuPy (cuBLAS, CuPy's element-wise and
reduction kernels).

.. note:: No GPU is lent to pitsolve's CI: the kernels compile to PTX there and run under
   Numba's CUDA simulator, but this backend has never run on a real device.
"""

from __future__ import annotations

import importlib
from typing import Any, ClassVar

import numpy as np

from ..kernels.cuda.registry import available
from .base import Backend

__all__ = ["CupyBackend"]


class CupyBackend(Backend):
    """CuPy arrays; CUDA kernels where ``numba-cuda`` is installed."""

    name: ClassVar[str] = "cupy"

    def __init__(self) -> None:
        self.xp = importlib.import_module("cupy")
        self.cuda = available()
        if self.cuda:
            self.scan_kernels = {**self.scan_kernels, "blocked": "cuda"}

    def residual_norms(self, h: Any, f: Any, atol: float, rtol: float,
                       out: Any = None) -> tuple[np.ndarray, np.ndarray, int]:
        arrays = (h, f) if out is None else (h, f, out)
        if not (self.cuda and _same_contiguous(*arrays)):
            return super().residual_norms(h, f, atol, rtol, out)
        from ..kernels.cuda import reductions

        return reductions.residual_norms(h, f, atol, rtol, out)

    def apply_step(self, h: Any, delta: Any) -> tuple[bool, float, float]:
        if not (self.cuda and _same_contiguous(h, delta)):
            return super().apply_step(h, delta)
        from ..kernels.cuda import reductions

        return reductions.apply_step(h, delta)

    def step_size(self, new: Any, old: Any) -> tuple[bool, float, float]:
        if not (self.cuda and _same_contiguous(new, old)):
            return super().step_size(new, old)
        from ..kernels.cuda import reductions

        return reductions.step_size(new, old)

    def all_finite(self, x: Any) -> bool:
        if not (self.cuda and _same_contiguous(x)):
            return super().all_finite(x)
        from ..kernels.cuda import reductions

        return reductions.all_finite(x)


def _same_contiguous(*arrays: Any) -> bool:
    """True if the arrays are C-contiguous float32/float64 arrays of one shape and dtype."""
    a = arrays[0]
    return all(
        x.shape == a.shape and x.dtype == a.dtype and x.flags.c_contiguous
        and x.dtype in (np.float32, np.float64)
        for x in arrays
    )
