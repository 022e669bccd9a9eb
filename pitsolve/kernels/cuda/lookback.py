r"""The diagonal scan in one pass over memory: tiles, block scans and a decoupled look-back.

The blocked scan of :mod:`pitsolve.kernels.cuda.scan` reads the maps twice (reduce, then
apply): five array-sized transfers against the three a scan must make (read ``A`` and ``b``,
write ``h``), which caps it at 60 % of the copy bandwidth. This kernel reads once (the
design of single-pass prefix scans, Merrill & Garland 2016, here for affine maps):

1. a block takes the next tile of :data:`ITEMS` × threads consecutive steps of one lane
   (batch element, component), in the order blocks *start* (an atomic counter, so that a
   block only ever waits for blocks already running);
2. it loads the tile coalesced into shared memory, each thread composes its
   :data:`ITEMS` consecutive maps, and a block scan (Hillis–Steele over the threads) gives
   every thread its prefix within the tile and the tile's map :math:`(P, Q)`;
3. thread 0 publishes :math:`(P, Q)` (flag 1), then looks back over the preceding tiles:
   a tile's published end state (flag 2) ends the look-back, an aggregate (flag 1) is
   composed in and the look-back continues; the first tile starts from :math:`h_0`;
   it then publishes its own end state :math:`h_{end} = P\,\mathrm{carry} + Q` (flag 2);
4. every thread applies its prefix to the carry and runs its steps; the tile is stored
   coalesced.

Flags and published values are read with atomic operations (which go to L2, never to a
stale L1 line) after a ``threadfence``; products below ``tiny·2**20`` are flushed to zero.
Reverse (transposed) scans use the step mapping of :func:`~._device.diag_map`. Under the
simulator blocks run one after another in launch order, which the counter turns into tile
order, so the look-back never waits there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import cuda

from ..._arrays import array_namespace
from ._device import diag_map
from .registry import THREADS, block_size, launch, register

__all__ = ["ITEMS", "scan_lookback"]

#: Consecutive steps per thread; a tile is ``ITEMS`` × threads steps.
ITEMS = 8
_TILE = ITEMS * THREADS
#: Shared tile with one pad slot per ``ITEMS`` entries: thread j's steps start at
#: j·(ITEMS+1), an odd stride, so the threads of a warp read distinct banks.
_PADDED = _TILE + _TILE // ITEMS
_D3 = "{f}[:, :, ::1]"
_D2 = "{f}[:, ::1]"


@cuda.jit(device=True, inline=True)
def _pad(p):  # pragma: no cover - device code
    """Shared-memory slot of tile entry ``p``."""
    return p + p // ITEMS


@cuda.jit(device=True, inline=True)
def _compose(p2, a2, p1, a1, floor, zero):  # pragma: no cover - device code
    """``(p2, a2) ∘ (p1, a1)``: the map (p1, a1) first; products below ``floor`` flushed."""
    p = p2 * p1
    if abs(p) < floor:
        p = zero
    return p, p2 * a1 + a2


@register(f"void({_D3}, {_D3}, {_D2}, int64, {{f}}, int64[::1], int32[:, ::1], {_D2}, {_D2}, "
          f"{_D2}, {_D3})")
@cuda.jit(cache=True)
def diag_lookback(A, b, h0, rev, floor, counter, flags, agg_p, agg_a, ends,
                  out):  # pragma: no cover - device code
    """One tile of one lane per block (see the module docstring)."""
    sa = cuda.shared.array(_PADDED, b.dtype)
    sb = cuda.shared.array(_PADDED, b.dtype)
    sp = cuda.shared.array(THREADS, b.dtype)
    sq = cuda.shared.array(THREADS, b.dtype)
    shared_id = cuda.shared.array(1, np.int64)
    shared_carry = cuda.shared.array(1, b.dtype)
    j = cuda.threadIdx.x
    n = cuda.blockDim.x
    T, D = b.shape[1], b.shape[2]
    C = flags.shape[1]
    if j == 0:
        shared_id[0] = cuda.atomic.add(counter, 0, 1)
    cuda.syncthreads()
    lane = shared_id[0] // C
    c = shared_id[0] % C
    bi = lane // D
    d = lane % D
    zero = floor * 0
    one = zero + 1
    base = c * n * ITEMS
    for k in range(ITEMS):  # coalesced load: thread j takes every n-th step
        p = k * n + j
        q = _pad(p)
        if base + p < T:
            sa[q], sb[q] = diag_map(A, b, bi, T, base + p, d, rev, zero)
        else:
            sa[q] = one
            sb[q] = zero
    cuda.syncthreads()
    phi = one  # thread j's ITEMS consecutive steps
    acc = zero
    for m in range(ITEMS):
        q = _pad(j * ITEMS + m)
        phi, acc = _compose(sa[q], sb[q], phi, acc, floor, zero)
    sp[j] = phi  # block scan of the threads' maps, in thread order
    sq[j] = acc
    cuda.syncthreads()
    off = 1
    while off < n:
        p1 = one
        a1 = zero
        if j >= off:
            p1 = sp[j - off]
            a1 = sq[j - off]
        cuda.syncthreads()
        if j >= off:
            phi, acc = _compose(phi, acc, p1, a1, floor, zero)
            sp[j] = phi
            sq[j] = acc
        cuda.syncthreads()
        off *= 2
    if j == 0:  # the tile's carry-in: the look-back
        P = sp[n - 1]
        Q = sq[n - 1]
        if c == 0:
            carry = h0[bi, d]
        else:
            agg_p[lane, c] = P
            agg_a[lane, c] = Q
            cuda.threadfence()
            cuda.atomic.max(flags, (lane, c), 1)
            ep = one
            ea = zero
            k = c - 1
            carry = zero
            while k >= 0:
                f = cuda.atomic.add(flags, (lane, k), 0)
                while f == 0:
                    f = cuda.atomic.add(flags, (lane, k), 0)
                cuda.threadfence()
                if f == 2:
                    carry = ep * cuda.atomic.add(ends, (lane, k), zero) + ea
                    break
                pk = cuda.atomic.add(agg_p, (lane, k), zero)
                ak = cuda.atomic.add(agg_a, (lane, k), zero)
                ep, ea = _compose(ep, ea, pk, ak, floor, zero)
                k -= 1
        ends[lane, c] = P * carry + Q
        cuda.threadfence()
        cuda.atomic.max(flags, (lane, c), 2)
        shared_carry[0] = carry
    cuda.syncthreads()
    h = shared_carry[0]
    if j > 0:
        h = sp[j - 1] * h + sq[j - 1]
    for m in range(ITEMS):
        q = _pad(j * ITEMS + m)
        h = sa[q] * h + sb[q]
        sb[q] = h
    cuda.syncthreads()
    for k in range(ITEMS):  # coalesced store
        p = k * n + j
        s = base + p
        if s < T:
            out[bi, T - 1 - s if rev else s, d] = sb[_pad(p)]


def scan_lookback(A: Any, b: Any, h0: Any, rev: bool) -> Any:
    """The diagonal scan (``rev``: transposed) of C-contiguous ``(B, T, D)`` device arrays of
    one float type in one pass; ``h0`` ``(B, D)`` (zeros for the transposed scan)."""
    xp = array_namespace(A, b)
    Bn, T, D = b.shape
    tile = ITEMS * block_size()
    C = -(-T // tile)
    lanes = Bn * D
    out = xp.empty_like(b)
    counter = xp.zeros(1, dtype=np.int64)
    flags = xp.zeros((lanes, C), dtype=np.int32)
    agg_p, agg_a, ends = (xp.empty((lanes, C), dtype=b.dtype) for _ in range(3))
    floor = np.dtype(b.dtype).type(np.finfo(b.dtype).tiny * 2.0**20)
    launch(diag_lookback, lanes * C * block_size(), A, b, h0, int(rev), floor, counter, flags,
           agg_p, agg_a, ends, out)
    return out
