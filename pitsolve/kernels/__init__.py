r"""Scans of affine maps: one entry point over every kernel.

``affine_scan`` solves :math:`h_t = A_t h_{t-1} + b_t` and ``affine_scan_transpose`` its
transpose :math:`\lambda_t = g_t + A_{t+1}^\top \lambda_{t+1}` for arrays with any leading batch
axes, by one of the kernels in :data:`KERNELS`. This layer knows nothing of models or problems.
"""

from __future__ import annotations

from typing import Any

from .._arrays import array_namespace, is_cupy_array
from . import numpy_scan

__all__ = ["KERNELS", "affine_scan", "affine_scan_transpose"]

#: kernel name -> (forward, reverse, takes chunk_size, runs on CuPy)
KERNELS = {
    "numba": ("scan_blocked", "scan_blocked_reverse", True, False),
    "cuda": ("scan_blocked", "scan_blocked_reverse", True, True),
    "numba-sequential": ("scan_sequential", "scan_sequential_reverse", False, False),
    "numpy": ("scan_blocked", "scan_blocked_reverse", True, True),
    "logdepth": ("scan_logdepth", "scan_logdepth_reverse", False, True),
    "loop": ("scan_loop", "scan_loop_reverse", False, True),
}


def _kernel(name: str, reverse: bool, on_gpu: bool) -> tuple[Any, bool]:
    if name not in KERNELS:
        raise ValueError(f"kernel must be one of {sorted(KERNELS)}, got {name!r}")
    fwd, rev, chunked, gpu_ok = KERNELS[name]
    if on_gpu and not gpu_ok:
        raise ValueError(f"kernel {name!r} runs on NumPy arrays only; got CuPy arrays")
    if name.startswith("numba"):
        from . import numba_scan as module  # compiled lazily, on first use
    elif name == "cuda":
        from .cuda import scan as module  # needs numba-cuda (a device or the simulator)
    else:
        module = numpy_scan
    return getattr(module, rev if reverse else fwd), chunked


def _flatten(x: Any, n_batch: int, xp: Any) -> Any:
    """Merge the ``n_batch`` leading axes into one, as a C-contiguous array."""
    return xp.ascontiguousarray(x.reshape(-1, *x.shape[n_batch:]))


def affine_scan(
    A: Any, b: Any, h0: Any, *, kernel: str = "numba", chunk_size: int | None = None
) -> Any:
    r"""States :math:`h_{1..T}` of :math:`h_t = A_t h_{t-1} + b_t`, shape ``(..., T, D)``.

    ``A`` is ``(..., T, D)`` (diagonal) or ``(..., T, D, D)`` (dense), ``b`` ``(..., T, D)``,
    ``h0`` ``(..., D)``; inputs are assumed validated (see
    :class:`pitsolve.LinearRecurrenceProblem`).
    """
    xp = array_namespace(A, b, h0)
    fn, chunked = _kernel(kernel, False, is_cupy_array(b))
    nb = b.ndim - 2
    kwargs = {"chunk_size": chunk_size} if chunked else {}
    out = fn(_flatten(A, nb, xp), _flatten(b, nb, xp), _flatten(h0, nb, xp), **kwargs)
    return out.reshape(b.shape)


def affine_scan_transpose(
    A: Any, g: Any, *, kernel: str = "numba", chunk_size: int | None = None
) -> tuple[Any, Any]:
    r"""The transposed scan: :math:`\lambda` with :math:`\lambda_T = g_T`,
    :math:`\lambda_t = g_t + A_{t+1}^\top \lambda_{t+1}`, and :math:`A_1^\top \lambda_1`.

    For the linear map :math:`(b, h_0) \mapsto h` of :func:`affine_scan`, ``λ`` is the cotangent
    of ``b`` and :math:`A_1^\top \lambda_1` that of ``h0``:
    :math:`\langle h, g\rangle = \langle b, \lambda\rangle + \langle h_0, A_1^\top\lambda_1\rangle`.
    """
    xp = array_namespace(A, g)
    fn, chunked = _kernel(kernel, True, is_cupy_array(g))
    nb = g.ndim - 2
    kwargs = {"chunk_size": chunk_size} if chunked else {}
    lam = fn(_flatten(A, nb, xp), _flatten(g, nb, xp), **kwargs).reshape(g.shape)
    A1, lam1 = A[..., 0, :, :] if A.ndim == g.ndim + 1 else A[..., 0, :], lam[..., 0, :]
    if A1.ndim == lam1.ndim:
        h0_bar = A1 * lam1
    else:
        h0_bar = xp.matmul(xp.swapaxes(A1, -1, -2), lam1[..., None])[..., 0]
    return lam, h0_bar
