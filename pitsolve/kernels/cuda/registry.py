r"""Every CUDA kernel of pitsolve, by name, with the signatures it is compiled for.

A kernel module decorates each kernel with :func:`register` (the signatures as templates in
``{f}``, the float type, expanded to float32 and float64); kernels are
``numba.cuda.jit(cache=True)``, so a process pays the JIT once per kernel and signature, not
every run. :func:`kernels` imports every such module (``pitsolve.kernels.cuda.*`` and every
``_cuda`` module of the package) and returns the registry, so that a test can compile each
kernel to PTX for each architecture and fail on a kernel it does not know. :func:`launch`
starts a kernel on the arrays it is given: CuPy arrays (through the CUDA array interface, on
CuPy's current stream), NumPy arrays under the simulator, and the arrays of
:mod:`pitsolve.testing.fake_cupy` under the simulator.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["FLOATS", "LAUNCHES", "SIM_THREADS", "THREADS", "Kernel", "available", "block_size",
           "blocks", "kernels", "launch", "register", "simulating"]

#: The float types every kernel is compiled for.
FLOATS = ("float32", "float64")
#: Threads per block of the one-dimensional launches.
THREADS = 128
#: Threads per block under the simulator (one Python thread each; every ``syncthreads`` a
#: barrier of Python threads), small enough for tests to cross block edges.
SIM_THREADS = 8


@dataclass(frozen=True)
class Kernel:
    """A registered kernel: its name (``module.function``), the dispatcher and the
    signatures (strings in Numba's notation) it must compile for."""

    name: str
    dispatcher: Any
    signatures: tuple[str, ...]


_REGISTRY: dict[str, Kernel] = {}
#: Launches per kernel (function name) since the last ``clear()``: what a computation costs in
#: launches, for benchmarks and tests.
LAUNCHES: Counter[str] = Counter()


def register(*templates: str) -> Any:
    """Decorator: record a ``numba.cuda.jit`` kernel with its signatures, each template's
    ``{f}`` replaced by every type of :data:`FLOATS`."""

    def deco(dispatcher: Any) -> Any:
        fn = dispatcher.py_func
        name = f"{fn.__module__.rsplit('.', 2)[-2]}.{fn.__module__.rsplit('.', 1)[-1]}." \
               f"{fn.__name__}"
        sigs = tuple(dict.fromkeys(t.format(f=f) for t in templates for f in FLOATS))
        _REGISTRY[name] = Kernel(name, dispatcher, sigs)
        return dispatcher

    return deco


def simulating() -> bool:
    """True if Numba's CUDA simulator is on (``NUMBA_ENABLE_CUDASIM=1``)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


@cache
def available() -> bool:
    """True if the CUDA kernels can run here: ``numba.cuda`` imports and either a CUDA
    device is present or the simulator is on."""
    try:
        from numba import cuda
    except ImportError:  # pragma: no cover - numba without its CUDA target
        return False
    try:
        return bool(simulating() or cuda.is_available())
    except Exception:  # pragma: no cover - a broken driver install
        return False


def _kernel_modules() -> list[str]:
    root = Path(__file__).resolve().parents[2]  # the pitsolve package
    names = []
    for info in pkgutil.walk_packages([str(root)], "pitsolve."):
        last = info.name.rsplit(".", 1)[-1]
        in_package = info.name.startswith(__package__ + ".") and last not in ("registry",)
        if in_package or last == "_cuda":
            names.append(info.name)
    return sorted(names)


def kernels() -> dict[str, Kernel]:
    """Import every kernel module; the registry ``{name: Kernel}``."""
    for name in _kernel_modules():
        importlib.import_module(name)
    return dict(_REGISTRY)


def block_size() -> int:
    """Threads per block of :func:`launch` for ``n`` ≥ that many work items: :data:`THREADS`,
    :data:`SIM_THREADS` under the simulator (kernels that tile by the block size ask)."""
    return SIM_THREADS if simulating() else THREADS


def blocks(n: int, threads: int = THREADS) -> int:
    """Blocks of ``threads`` threads covering ``n`` work items (at least one)."""
    return max(1, -(-n // threads))


def _arg(x: Any) -> Any:
    """What a kernel takes for ``x``: a CuPy array as a Numba view of its memory, without the
    stream synchronisation the CUDA array interface asks for by default (the kernel runs on
    the array's stream, CuPy's current one, so it is ordered after the array's producers);
    under the simulator NumPy arrays (the stand-in's: the array it wraps), read-only ones as
    simulated device arrays (the simulator copies every host argument back)."""
    from numba import cuda

    if simulating():
        view = getattr(x, "_simulator_view", None)
        x = view() if view is not None else x
        if isinstance(x, np.ndarray) and not x.flags.writeable:
            return cuda.to_device(x)
        return x
    if hasattr(x, "__cuda_array_interface__"):
        return cuda.as_cuda_array(x, sync=False)
    return x


def launch(kernel: Any, n: int, *args: Any, rows: int = 1) -> None:
    """Start ``kernel`` over ``n`` work items (one thread each; ``rows`` such grids, the
    grid's second axis) on the current stream; the simulator (one Python thread per CUDA
    thread) gets blocks of at most :data:`SIM_THREADS` threads."""
    if n <= 0 or rows <= 0:
        return
    LAUNCHES[kernel.py_func.__name__] += 1
    args = tuple(_arg(a) for a in args)
    threads = THREADS
    if simulating():
        threads = min(SIM_THREADS, n)
        kernel[(blocks(n, threads), rows), threads](*args)
        return
    kernel[(blocks(n, threads), rows), threads, _stream()](*args)


def _stream() -> Any:
    """CuPy's current stream as a Numba stream (its null stream: the legacy default one)."""
    import cupy  # a real device: CuPy owns the stream
    from numba import cuda

    ptr = cupy.cuda.get_current_stream().ptr
    return cuda.default_stream() if ptr == 0 else cuda.external_stream(ptr)
