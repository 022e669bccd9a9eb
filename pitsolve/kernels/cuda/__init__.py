r"""GPU kernels: Numba's CUDA target, launched on CuPy arrays.

The kernels live in :mod:`pitsolve.kernels.cuda.scan` (the blocked affine scans, forward and
transposed, diagonal and dense), :mod:`pitsolve.kernels.cuda.reductions` (the Newton
iterations' fused reductions) and in the models' ``_cuda`` modules (f and its Jacobian in one
pass). They are written once, for the CUDA target of ``numba-cuda``, and checked without a
GPU: every kernel compiles to PTX (for sm_80 and sm_90) with no driver, and runs under Numba's
CUDA simulator (``NUMBA_ENABLE_CUDASIM=1``) on NumPy arrays.

This package imports nothing from ``numba.cuda`` until a kernel is needed: :func:`available`
says whether kernels can run here (a CUDA device, or the simulator), :func:`kernels` imports
every kernel module and returns the registry (:mod:`pitsolve.kernels.cuda.registry`).
"""

from __future__ import annotations

from .registry import Kernel, available, kernels, simulating

__all__ = ["Kernel", "available", "kernels", "simulating"]
