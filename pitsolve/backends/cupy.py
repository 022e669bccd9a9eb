"""The CuPy backend: CuPy arrays on a CUDA device.

Every method is the array-namespace reference of :class:`~pitsolve.backends.base.Backend`
run by CuPy (the blocked scan is the NumPy twin of the GPU algorithm, launched as CuPy array
operations). Dedicated GPU kernels replace these methods here, and only here.

.. note:: This backend has never run on a real device in pitsolve's CI (no GPU is lent);
   the code paths are those of the NumPy backend, which CI runs.
"""

from __future__ import annotations

import importlib
from typing import ClassVar

from .base import Backend

__all__ = ["CupyBackend"]


class CupyBackend(Backend):
    """CuPy arrays, array-namespace kernels."""

    name: ClassVar[str] = "cupy"

    def __init__(self) -> None:
        self.xp = importlib.import_module("cupy")
