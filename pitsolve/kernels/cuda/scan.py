r"""The blocked affine scan on a CUDA device, forward and transposed, diagonal and dense.

The algorithm of :func:`pitsolve.kernels.numpy_scan.scan_blocked` (its tested twin), with
arrays ``A`` ``(B, T, D)`` or ``(B, T, D, D)``, ``b`` ``(B, T, D)``, ``h0`` ``(B, D)``:

1. **reduce** (one thread per batch element, chunk of L steps and lane): the chunk's end
   state :math:`e_c` from zero carry-in and its transfer map
   :math:`\Phi_c = A_{\mathrm{end}}\cdots A_{\mathrm{start}}`;
2. **carries**: :math:`\mathrm{carry}_0 = h_0`,
   :math:`\mathrm{carry}_c = \Phi_{c-1}\mathrm{carry}_{c-1} + e_{c-1}` — itself an affine scan
   of C = T/L steps, so it is this same algorithm on ``(Φ, e)`` (recursively) until a few
   hundred chunks remain, which one thread per lane runs in order;
3. **apply** (one thread per batch element, chunk and lane): re-run the chunk from its true
   carry-in, writing the states.

The transposed scan :math:`\lambda_t = g_t + A_{t+1}^\top\lambda_{t+1}` runs the same kernels
with ``rev = 1``: step s is time ``t = T-1-s`` and its map :math:`A_{t+1}^\top` (zero at
``t = T-1``), read from ``A`` in place (no reversed copy).

Diagonal maps: a lane is one state component, a thread one (batch, chunk, component);
adjacent threads read adjacent components (coalesced when D is large; for D = 1 they read
addresses L apart). Dense maps (D ≤ :data:`MAX_DENSE`): in the reduce a lane is one column
k of :math:`\Phi_c` (k < D) or :math:`e_c` (k = D), each thread carrying one D-vector in
registers/local memory through the chunk's matrix–vector products (no cooperation between
threads is needed: column k of :math:`A\Phi` is :math:`A\Phi_{:,k}`); in the apply one thread
per (batch, chunk). Products of strongly contracting maps are flushed to zero below
``tiny·2**20`` (as the CPU kernels do), so no thread ever computes on subnormals.

The default chunk length gives every lane about :data:`TARGET_THREADS` threads' worth of
chunks (enough to fill a GPU) and never fewer than 8 steps per chunk.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda

from ..._arrays import array_namespace
from ._device import diag_map, split_index
from .registry import launch, register

__all__ = ["LOOKBACK_MAX_D", "MAX_DENSE", "TARGET_THREADS", "chunk_length", "scan_blocked",
           "scan_blocked_reverse"]

#: Largest state dimension of the dense kernels (their per-thread vectors have this size).
MAX_DENSE = 64
#: Threads the default chunk length aims at (a few per CUDA core of a large GPU).
TARGET_THREADS = 1 << 16
#: Largest D for which a diagonal scan without an explicit chunk size runs the one-pass
#: kernel of :mod:`pitsolve.kernels.cuda.lookback` (its blocks read one lane's steps
#: coalesced; for larger D the lanes of this module's kernels are).
LOOKBACK_MAX_D = 16
#: Chunks up to which the carries run in one sequential pass (beyond: recursively).
_SEQUENTIAL_CARRIES = 256

_DIAG = "{f}[:, :, ::1]"
_DENSE = "{f}[:, :, :, ::1]"


# -- diagonal maps --------------------------------------------------------------------------
@register(f"void({_DIAG}, {_DIAG}, int64, int64, {{f}}, {_DIAG}, {_DIAG})")
@cuda.jit(cache=True)
def diag_reduce(A, b, L, rev, floor, Phi, e):  # pragma: no cover - device code
    """Per (batch, chunk, component): the chunk's map ``Phi`` and end state ``e``. (The
    threshold ``floor`` also gives the kernels their typed zero and one: never read an
    output to get them, it is uninitialised.)"""
    i = cuda.grid(1)
    Bn, T, D = b.shape
    C = Phi.shape[1]
    if i >= Bn * C * D:
        return
    bi, c, d = split_index(i, D, C)
    zero = floor * 0
    phi = zero + 1
    acc = zero
    for s in range(c * L, min(T, (c + 1) * L)):
        a, bb = diag_map(A, b, bi, T, s, d, rev, zero)
        acc = a * acc + bb
        phi = a * phi
        if abs(phi) < floor:
            phi = zero
    Phi[bi, c, d] = phi
    e[bi, c, d] = acc


@register(f"void({_DIAG}, {_DIAG}, int64, int64, {{f}}, {_DIAG}, {_DIAG})")
@cuda.jit(cache=True)
def diag_apply(A, b, L, rev, floor, carry, out):  # pragma: no cover - device code
    """Per (batch, chunk, component): the chunk's states from its carry-in."""
    i = cuda.grid(1)
    Bn, T, D = b.shape
    C = carry.shape[1]
    if i >= Bn * C * D:
        return
    bi, c, d = split_index(i, D, C)
    h = carry[bi, c, d]
    zero = floor * 0
    for s in range(c * L, min(T, (c + 1) * L)):
        a, bb = diag_map(A, b, bi, T, s, d, rev, zero)
        h = a * h + bb
        out[bi, T - 1 - s if rev else s, d] = h


@register(f"void({_DIAG}, {_DIAG}, {{f}}[:, ::1], {_DIAG})")
@cuda.jit(cache=True)
def diag_carries(Phi, e, h0, carry):  # pragma: no cover - device code
    """Per (batch, component), in chunk order: ``carry_c = Phi_{c-1} carry_{c-1} + e_{c-1}``."""
    i = cuda.grid(1)
    Bn, C, D = e.shape
    if i >= Bn * D:
        return
    d = i % D
    bi = i // D
    h = h0[bi, d]
    carry[bi, 0, d] = h
    for c in range(1, C):
        h = Phi[bi, c - 1, d] * h + e[bi, c - 1, d]
        carry[bi, c, d] = h


# -- dense maps -------------------------------------------------------------------------------
@cuda.jit(device=True, inline=True)
def _dense_step(A, b, bi, T, s, rev, with_b, v, w, D, zero):  # pragma: no cover
    """``v <- M_s v (+ b_s)`` with ``M_s = A_s`` (forward) or ``A_{t+1}^T`` (reverse, zero at
    t = T-1), through the scratch vector ``w``."""
    t = T - 1 - s if rev else s
    for r in range(D):
        acc = zero
        if rev:
            if t + 1 < T:
                for k in range(D):
                    acc += A[bi, t + 1, k, r] * v[k]
        else:
            for k in range(D):
                acc += A[bi, t, r, k] * v[k]
        if with_b:
            acc += b[bi, t, r]
        w[r] = acc
    for r in range(D):
        v[r] = w[r]


@register(f"void({_DENSE}, {_DIAG}, int64, int64, {{f}}, {_DENSE}, {_DIAG})")
@cuda.jit(cache=True)
def dense_reduce(A, b, L, rev, floor, Phi, e):  # pragma: no cover - device code
    """Per (batch, chunk, k ≤ D): column k of the chunk's map ``Phi`` (k < D) or its end
    state ``e`` (k = D)."""
    i = cuda.grid(1)
    Bn, T, D = b.shape
    C = Phi.shape[1]
    if i >= Bn * C * (D + 1):
        return
    bi, c, k = split_index(i, D + 1, C)
    v = cuda.local.array(MAX_DENSE, b.dtype)
    w = cuda.local.array(MAX_DENSE, b.dtype)
    zero = floor * 0
    for r in range(D):
        v[r] = zero + 1 if r == k else zero
    lo, hi = c * L, min(T, (c + 1) * L)
    for s in range(lo, hi):
        _dense_step(A, b, bi, T, s, rev, k == D, v, w, D, zero)
        if k < D:
            for r in range(D):
                if abs(v[r]) < floor:
                    v[r] = zero
    for r in range(D):
        if k < D:
            Phi[bi, c, r, k] = v[r]
        else:
            e[bi, c, r] = v[r]


@register(f"void({_DENSE}, {_DIAG}, int64, int64, {{f}}, {_DIAG}, {_DIAG})")
@cuda.jit(cache=True)
def dense_apply(A, b, L, rev, floor, carry, out):  # pragma: no cover - device code
    """Per (batch, chunk): the chunk's states from its carry-in."""
    i = cuda.grid(1)
    Bn, T, D = b.shape
    C = carry.shape[1]
    if i >= Bn * C:
        return
    bi, c, _ = split_index(i, 1, C)
    v = cuda.local.array(MAX_DENSE, b.dtype)
    w = cuda.local.array(MAX_DENSE, b.dtype)
    for r in range(D):
        v[r] = carry[bi, c, r]
    for s in range(c * L, min(T, (c + 1) * L)):
        _dense_step(A, b, bi, T, s, rev, True, v, w, D, floor * 0)
        t = T - 1 - s if rev else s
        for r in range(D):
            out[bi, t, r] = v[r]


@register(f"void({_DENSE}, {_DIAG}, {{f}}[:, ::1], {_DIAG})")
@cuda.jit(cache=True)
def dense_carries(Phi, e, h0, carry):  # pragma: no cover - device code
    """Per batch element, in chunk order: ``carry_c = Phi_{c-1} carry_{c-1} + e_{c-1}``."""
    bi = cuda.grid(1)
    Bn, C, D = e.shape
    if bi >= Bn:
        return
    v = cuda.local.array(MAX_DENSE, e.dtype)
    w = cuda.local.array(MAX_DENSE, e.dtype)
    for r in range(D):
        v[r] = h0[bi, r]
        carry[bi, 0, r] = v[r]
    for c in range(1, C):
        for r in range(D):
            acc = e[bi, c - 1, r]
            for k in range(D):
                acc += Phi[bi, c - 1, r, k] * v[k]
            w[r] = acc
        for r in range(D):
            v[r] = w[r]
            carry[bi, c, r] = w[r]


# -- drivers ----------------------------------------------------------------------------------
def chunk_length(T: int, lanes: int) -> int:
    """Default chunk length: about :data:`TARGET_THREADS` threads over ``lanes`` lanes, at
    least 8 steps per chunk (and one chunk for short series)."""
    chunks = max(1, min(-(-TARGET_THREADS // max(lanes, 1)), T // 8))
    return -(-T // chunks)


def _floor(dtype: Any) -> Any:
    return np.dtype(dtype).type(np.finfo(dtype).tiny * 2.0**20)


def _scan(A: Any, b: Any, h0: Any, rev: bool, chunk_size: int | None) -> Any:
    xp = array_namespace(A, b)
    Bn, T, D = b.shape
    A, h0 = (xp.ascontiguousarray(x, dtype=b.dtype) for x in (A, h0))
    dense = A.ndim == 4
    if not dense and not chunk_size and D <= LOOKBACK_MAX_D:
        from .lookback import scan_lookback

        return scan_lookback(A, b, h0, rev)
    if dense and D > MAX_DENSE:  # beyond the kernels' vectors: the array code (batched GEMM)
        from .. import numpy_scan

        return numpy_scan.scan_blocked(A, b, h0, chunk_size=chunk_size, xp=xp) if not rev else \
            numpy_scan.scan_blocked_reverse(A, b, chunk_size=chunk_size, xp=xp)
    lanes = D + 1 if dense else D
    L = int(chunk_size) if chunk_size else chunk_length(T, Bn * lanes)
    C = -(-T // L)
    out = xp.empty_like(b)
    Phi = xp.empty((Bn, C, D, D) if dense else (Bn, C, D), dtype=b.dtype)
    e = xp.empty((Bn, C, D), dtype=b.dtype)
    reduce, apply = (dense_reduce, dense_apply) if dense else (diag_reduce, diag_apply)
    launch(reduce, Bn * C * lanes, A, b, L, int(rev), _floor(b.dtype), Phi, e)
    carry = xp.empty((Bn, C, D), dtype=b.dtype)
    if C > _SEQUENTIAL_CARRIES:  # the carries are a scan of C steps: the same algorithm
        carry[:, 0] = h0
        carry[:, 1:] = _scan(xp.ascontiguousarray(Phi[:, :-1]),
                             xp.ascontiguousarray(e[:, :-1]), h0, False, None)
    else:
        launch(dense_carries if dense else diag_carries, Bn * (1 if dense else D),
               Phi, e, h0, carry)
    launch(apply, Bn * C * (1 if dense else D), A, b, L, int(rev), _floor(b.dtype), carry, out)
    return out


def scan_blocked(A: Any, b: Any, h0: Any, *, chunk_size: int | None = None) -> Any:
    r"""States of :math:`h_t = A_t h_{t-1} + b_t`: ``A`` ``(B, T, D)`` or ``(B, T, D, D)``,
    ``b`` ``(B, T, D)``, ``h0`` ``(B, D)``, all C-contiguous device arrays of one float type
    (dense maps with D > :data:`MAX_DENSE` take the array code's blocked scan, whose
    chunk-map products are batched GEMMs)."""
    if b.shape[1] == 0:
        return b.copy()
    return _scan(A, b, h0, False, chunk_size)


def scan_blocked_reverse(A: Any, g: Any, *, chunk_size: int | None = None) -> Any:
    r""":math:`\lambda_{T-1} = g_{T-1}`, :math:`\lambda_t = g_t + A_{t+1}^\top\lambda_{t+1}`
    (arrays as for :func:`scan_blocked`)."""
    if g.shape[1] == 0:
        return g.copy()
    xp = array_namespace(A, g)
    zero = xp.zeros((g.shape[0], g.shape[2]), dtype=g.dtype)
    return _scan(A, g, zero, True, chunk_size)
