"""What every algorithm module shares: backend selection."""

from __future__ import annotations

from typing import Any

from ..backends import namespace_for

__all__ = ["select_backend"]


def select_backend(problem: Any, algorithm_backend: str, control_backend: str | None) -> str:
    """The backend a solve runs on: ``"numba"``, ``"numpy"`` or ``"cupy"``.

    The ``backend=`` control of :func:`pitsolve.solve` overrides the algorithm's; ``"auto"``
    means Numba for NumPy arrays and CuPy for CuPy arrays. CuPy arrays cannot run on a CPU
    backend (move them with ``.get()`` first).
    """
    requested = control_backend or algorithm_backend
    on_gpu = problem.xp.__name__ == "cupy"
    if requested == "auto":
        return "cupy" if on_gpu else "numba"
    if on_gpu and requested != "cupy":
        raise ValueError(
            f"backend={requested!r} runs on NumPy arrays, but the problem holds CuPy arrays; "
            "use backend='cupy' or move the arrays to the host"
        )
    if requested == "cupy" and not on_gpu:
        namespace_for("cupy")  # raises a clear error without a GPU
        raise ValueError(
            "backend='cupy' needs the problem's arrays on the GPU: build the problem from "
            "CuPy arrays (cupy.asarray)"
        )
    return requested
