"""Which array library an array belongs to, and which optional dependencies are usable.

The one place that looks at array types: everything else asks a
:class:`~pitsolve.backends.Backend`, which a solve chooses once from these answers. Importing
pitsolve never imports CuPy or mpi4py: they are looked up lazily, and the environment
variables ``PITSOLVE_DISABLE_CUPY=1`` / ``PITSOLVE_DISABLE_MPI=1`` opt out of them entirely.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from functools import cache
from types import ModuleType
from typing import Any

import numpy as np

__all__ = ["array_namespace", "has_cupy", "has_mpi4py", "is_cupy_array", "to_numpy"]


def _disabled(name: str) -> bool:
    return os.environ.get(f"PITSOLVE_DISABLE_{name.upper()}", "") not in ("", "0")


@cache
def has_cupy() -> bool:
    """True if CuPy is importable and a CUDA device is usable."""
    if _disabled("cupy") or importlib.util.find_spec("cupy") is None:
        return False
    try:
        cupy = importlib.import_module("cupy")
        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # no driver, no device, broken install: all mean "no GPU here"
        return False


@cache
def has_mpi4py() -> bool:
    """True if mpi4py is installed (it is imported only when an MPI engine is used)."""
    return not _disabled("mpi") and importlib.util.find_spec("mpi4py") is not None


def is_cupy_array(x: Any) -> bool:
    """True for a CuPy ndarray, decided without importing CuPy."""
    return type(x).__module__.split(".")[0] == "cupy"


def array_namespace(*arrays: Any) -> ModuleType:
    """The array module (``numpy`` or ``cupy``) of the given arrays; ``None`` entries are skipped.

    Raises
    ------
    TypeError
        If NumPy and CuPy arrays are mixed.
    """
    kinds = {is_cupy_array(a) for a in arrays if a is not None}
    if len(kinds) > 1:
        raise TypeError("arrays mix NumPy and CuPy; move them to one device first")
    if kinds == {True}:
        return importlib.import_module("cupy")
    return np


def to_numpy(x: Any) -> np.ndarray:
    """A NumPy copy (or view) of a NumPy or CuPy array."""
    if is_cupy_array(x):
        return x.get()
    return np.asarray(x)
