r"""The Newton iterations' reductions on a CUDA device, each one pass over the trajectory.

* :func:`residual_norms`: per batch element b, :math:`\max_t e_{b,t}` and
  :math:`\max_t q_{b,t}` with :math:`e = \|h_t - f_t\|_\infty`,
  :math:`q = e / (\mathrm{atol} + \mathrm{rtol}\|h_t\|_\infty)`, the first t with
  :math:`q > 1` or NaN, and optionally ``out = f - h`` (see :mod:`pitsolve.kernels.residual`);
* :func:`apply_step` (``h += δ``), :func:`step_size` (a new iterate against an old one):
  all finite, :math:`\max|\delta|`, :math:`\max|h|` (see :mod:`pitsolve.kernels.update`);
* :func:`all_finite`.

Each thread takes one step (residuals) or one entry (the others); a block reduces its
threads' values in shared memory and one thread per block folds them into the result with
an atomic operation (max, min), so there is one atomic per block and per quantity, not per
entry. NaN never enters a max (CUDA's float max drops it): it is counted on the side, and
the host puts it back into the norms.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda

from ..._arrays import array_namespace
from .registry import THREADS, launch, register

__all__ = ["all_finite", "apply_step", "residual_norms", "step_size"]


@cuda.jit(device=True, inline=True)
def _block_max(shared):  # pragma: no cover - device code
    """Column 0 of ``shared`` ``(K, threads)`` becomes the maximum over the block's threads
    of each row (each thread has written its K values into its column): one tree, log₂
    (threads) barriers for all K quantities."""
    tid = cuda.threadIdx.x
    n = cuda.blockDim.x
    cuda.syncthreads()
    s = 1
    while s < n:
        if tid % (2 * s) == 0 and tid + s < n:
            for k in range(shared.shape[0]):
                o = shared[k, tid + s]
                if o > shared[k, tid]:
                    shared[k, tid] = o
        cuda.syncthreads()
        s *= 2


@register("void({f}[:, :, ::1], {f}[:, :, ::1], float64, float64, boolean, {f}[:, :, ::1], "
          "float64[::1], float64[::1], float64[::1], float64[::1])")
@cuda.jit(cache=True)
def residual_kernel(h, f, atol, rtol, write, out, err, q, nan, bad):  # pragma: no cover
    """Grid ``(steps, batch)``: per block, the maxima of e and q, the NaN flag and the
    largest ``T - t`` over bad steps t (the first bad step) into ``err, q, nan, bad``."""
    shared = cuda.shared.array((4, THREADS), np.float64)
    bi = cuda.blockIdx.y
    t = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    T, D = h.shape[1], h.shape[2]
    e = 0.0
    s = 0.0
    isnan = 0.0
    first = 0.0
    if t < T:
        for d in range(D):
            x = h[bi, t, d]
            y = f[bi, t, d] - x
            if write:
                out[bi, t, d] = y
            r = abs(y)
            a = abs(x)
            if r != r or a != a:
                isnan = 1.0
            e = max(e, r)
            s = max(s, a)
        ratio = e / (atol + rtol * s)
        if isnan or not ratio <= 1.0:
            first = float(T - t)
        if isnan:
            e = 0.0
            ratio = 0.0
    else:
        ratio = 0.0
    tid = cuda.threadIdx.x
    shared[0, tid] = e
    shared[1, tid] = ratio
    shared[2, tid] = isnan
    shared[3, tid] = first
    _block_max(shared)
    if tid == 0:
        cuda.atomic.max(err, bi, shared[0, 0])
        cuda.atomic.max(q, bi, shared[1, 0])
        cuda.atomic.max(nan, bi, shared[2, 0])
        cuda.atomic.max(bad, 0, shared[3, 0])


@register("void({f}[::1], {f}[::1], boolean, float64[::1])")
@cuda.jit(cache=True)
def step_kernel(x, y, add, stats):  # pragma: no cover - device code
    """Per entry: ``add``: ``x += y`` and (y, x + y); else (x - y, x); into ``stats``:
    (any not finite, max |step|, max |new|)."""
    shared = cuda.shared.array((3, THREADS), np.float64)
    i = cuda.grid(1)
    bad = 0.0
    step = 0.0
    size = 0.0
    if i < x.shape[0]:
        if add:
            v = y[i]
            new = x[i] + v
            x[i] = new
        else:
            new = x[i]
            v = new - y[i]
        if not (v - v == 0 and new - new == 0):  # inf - inf and NaN - NaN are NaN
            bad = 1.0
        else:
            step = abs(v)
            size = abs(new)
    tid = cuda.threadIdx.x
    shared[0, tid] = bad
    shared[1, tid] = step
    shared[2, tid] = size
    _block_max(shared)
    if tid == 0:
        for k in range(3):
            cuda.atomic.max(stats, k, shared[k, 0])


@register("void({f}[::1], float64[::1])")
@cuda.jit(cache=True)
def nonfinite_kernel(x, flag):  # pragma: no cover - device code
    """``flag[0] = 1`` if an entry of ``x`` is not finite (every thread that finds one)."""
    i = cuda.grid(1)
    if i < x.shape[0]:
        v = x[i]
        if not v - v == 0:
            flag[0] = 1.0


def _host(x: Any) -> np.ndarray:
    get = getattr(x, "get", None)
    return np.asarray(get() if get is not None else x)


def residual_norms(h: Any, f: Any, atol: float, rtol: float,
                   out: Any = None) -> tuple[np.ndarray, np.ndarray, int]:
    """``(max_t e, max_t q, first bad t)`` of device arrays ``(..., T, D)``; the norms as
    float64 NumPy arrays of the batch shape (NaN where the residual has a NaN); ``out``
    (C-contiguous, like ``h``) receives ``f - h``."""
    xp = array_namespace(h, f)
    batch, (T, D) = h.shape[:-2], h.shape[-2:]
    hb = xp.ascontiguousarray(h.reshape(-1, T, D))
    fb = xp.ascontiguousarray(f.reshape(-1, T, D))
    B = hb.shape[0]
    write = out is not None
    ob = out.reshape(B, T, D) if write else xp.empty((1, 1, 1), dtype=h.dtype)
    acc = xp.zeros((4, B), dtype=np.float64)  # err, q, nan, (T - first bad) in row 3[0]
    launch(residual_kernel, T, hb, fb, float(atol), float(rtol), write, ob,
           acc[0], acc[1], acc[2], acc[3], rows=B)
    a = _host(acc)
    err, q = a[0].copy(), a[1].copy()
    err[a[2] > 0] = np.nan
    q[a[2] > 0] = np.nan
    first = T - int(a[3].max()) if a[3].max() > 0 else T
    return err.reshape(batch), q.reshape(batch), first


def _step(x: Any, y: Any, add: bool) -> tuple[bool, float, float]:
    xp = array_namespace(x, y)
    stats = xp.zeros(3, dtype=np.float64)
    launch(step_kernel, x.size, x.reshape(-1), y.reshape(-1), add, stats)
    bad, step, size = (float(v) for v in _host(stats))
    if bad:
        return False, float("inf"), float("inf")
    return True, step, size


def apply_step(h: Any, delta: Any) -> tuple[bool, float, float]:
    """``h += delta`` (C-contiguous device arrays of one shape); ``(all finite, max |delta|,
    max |h + delta|)``, the norms inf when not all finite."""
    return _step(h, delta, True)


def step_size(new: Any, old: Any) -> tuple[bool, float, float]:
    """``(all finite, max |new - old|, max |new|)`` of C-contiguous device arrays."""
    return _step(new, old, False)


def all_finite(x: Any) -> bool:
    """True if every entry of the C-contiguous device array ``x`` is finite."""
    xp = array_namespace(x)
    flag = xp.zeros(1, dtype=np.float64)
    launch(nonfinite_kernel, x.size, x.reshape(-1), flag)
    return not float(_host(flag)[0])
