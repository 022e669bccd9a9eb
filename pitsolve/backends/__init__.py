"""Backends: one :class:`Backend` per device, chosen once when a solve starts.

=========  ==============  ===========================================================
name       arrays          kernels
=========  ==============  ===========================================================
``numba``  NumPy           compiled CPU kernels (the default for NumPy arrays)
``numpy``  NumPy           the array-namespace reference code only (no Numba kernel)
``cupy``   CuPy            the array-namespace code on a CUDA device
=========  ==============  ===========================================================

:func:`select` picks the backend of a solve from its arrays and the ``backend=`` options;
:func:`for_arrays` the one a model uses when called outside a solve. Adding a device means
one module here (a :class:`Backend` subclass) plus its kernels in :mod:`pitsolve.kernels`.
The array-type questions themselves (:func:`array_namespace`, :func:`is_cupy_array`,
:func:`has_cupy`, ...) live in ``pitsolve._arrays`` and are re-exported here.
"""

from __future__ import annotations

from functools import cache
from types import ModuleType
from typing import Any

from .._arrays import array_namespace, has_cupy, has_mpi4py, is_cupy_array, to_numpy
from .base import SCAN_METHODS, Backend

__all__ = [
    "BACKENDS",
    "SCAN_METHODS",
    "Backend",
    "array_namespace",
    "for_arrays",
    "get_backend",
    "has_cupy",
    "has_mpi4py",
    "is_cupy_array",
    "namespace_for",
    "select",
    "to_numpy",
]

#: Backends a user may name: ``"numba"`` and ``"numpy"`` compute on NumPy arrays on the CPU,
#: ``"cupy"`` on CuPy arrays on a GPU.
BACKENDS = ("numba", "numpy", "cupy")


@cache
def _instance(name: str) -> Backend:
    if name == "numba":
        from .numba import NumbaBackend

        return NumbaBackend()
    if name == "cupy":
        from .cupy import CupyBackend

        return CupyBackend()
    return Backend()


def get_backend(name: str | Backend) -> Backend:
    """The backend called ``name`` (one instance per name); a :class:`Backend` is returned
    as it is.

    Raises
    ------
    ValueError
        For an unknown name, or ``"cupy"`` without CuPy and a CUDA device.
    """
    if isinstance(name, Backend):
        return name
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if name == "cupy" and not has_cupy():
        raise ValueError(
            "backend='cupy' needs CuPy and a CUDA device; install pitsolve[gpu] "
            "or choose backend='numba'"
        )
    return _instance(name)


def namespace_for(backend: str) -> ModuleType:
    """The array module used by a named backend."""
    return get_backend(backend).xp


def for_arrays(*arrays: Any) -> Backend:
    """The default backend of arrays: Numba for NumPy arrays, CuPy for CuPy arrays (None
    entries are skipped)."""
    return _instance("cupy" if array_namespace(*arrays).__name__ == "cupy" else "numba")


def select(xp: ModuleType, *requested: str | None) -> Backend:
    """The backend a solve on arrays of namespace ``xp`` runs on.

    ``requested`` are the options from the most to the least specific (e.g. the ``backend=``
    control of :func:`pitsolve.solve`, then the algorithm's ``backend``); the first that is
    not None or ``"auto"`` wins, else the default of the arrays (:func:`for_arrays`). CuPy
    arrays cannot run on a CPU backend, nor NumPy arrays on ``"cupy"``.
    """
    name = next((r for r in requested if r is not None and r != "auto"), "auto")
    on_gpu = xp.__name__ == "cupy"
    if name == "auto":
        return _instance("cupy" if on_gpu else "numba")
    if on_gpu and name != "cupy":
        raise ValueError(
            f"backend={name!r} runs on NumPy arrays, but the problem holds CuPy arrays; "
            "use backend='cupy' or move the arrays to the host"
        )
    backend = get_backend(name)  # raises a clear error for "cupy" without a GPU
    if name == "cupy" and not on_gpu:
        raise ValueError(
            "backend='cupy' needs the problem's arrays on the GPU: build the problem from "
            "CuPy arrays (cupy.asarray)"
        )
    return backend
