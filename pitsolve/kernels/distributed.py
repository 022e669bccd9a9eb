r"""The affine scan with its time axis split over the ranks of a communicator.

Rank r holds a contiguous slice :math:`[s_r, s_{r+1})` of the steps (rank order is time
order; slices may be uneven, down to one step) and never the rest. A scan is

1. **local reduction**: the slice's affine summary — its transfer map
   :math:`\Phi_r = A_{s_{r+1}-1}\cdots A_{s_r}` and its end state :math:`e_r` from a zero
   carry-in, in one parallel pass over chunks without T-sized temporaries (the Numba
   kernels' chunk summaries; on other backends a local scan and :func:`chain_product`, a
   log-depth pairwise product);
2. **one collective**: every rank gathers every rank's summary (``allgather``; O(D²) per
   rank, independent of T) and folds the ones before it:
   :math:`c_0 = h_0`, :math:`c_{r+1} = \Phi_r c_r + e_r`;
3. **local fix-up**: the local scan from the true carry-in :math:`c_r`.

The last rank computes no summary (no rank after it needs one): on one rank the scan is the
local scan alone.

The transposed scan :math:`\lambda_t = g_t + A_{t+1}^\top\lambda_{t+1}` runs the other way:
rank r's summary is its local transposed scan's output to the left,
:math:`o_r = A_{s_r}^\top\mu_{s_r}` (μ from a zero incoming cotangent), and
:math:`\Phi_r^\top`; the incoming cotangent is :math:`c_{P-1} = 0`,
:math:`c_{r-1} = o_r + \Phi_r^\top c_r`, added to :math:`g` at the slice's last step before
the local transposed scan. Rank 0's output to the left is the cotangent of :math:`h_0`; rank 0
computes no summary.

Every rank validates the gathered shapes and dtypes, so a bad slice (empty, or widths or
dtypes that disagree between ranks) raises the same ``ValueError`` on every rank, never a
deadlock. ``comm`` is an mpi4py communicator (anything with ``allgather`` and ``Get_rank``).
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np

from .._arrays import array_namespace, is_cupy_array
from . import affine_scan, affine_scan_transpose
from ._numba_summaries import _end_chunk

__all__ = ["chain_product", "previous_state", "scan_distributed", "scan_transpose_distributed"]


def _flush(x: Any, xp: Any) -> Any:
    """Entries below ``tiny·2**20`` in magnitude set to zero (no subnormal products)."""
    floor = np.finfo(x.dtype).tiny * 2.0**20
    return xp.where(xp.abs(x) < floor, xp.zeros_like(x), x)


def chain_product(A: Any, dense: bool) -> Any:
    r""":math:`\Phi = A_{T-1}\cdots A_1 A_0` over the time axis of ``A`` ``(..., T, D, D)``
    (``dense``) or ``(..., T, D)``: pairwise products level by level (⌈log₂ T⌉ batched
    products, O(T D³) work in all, written against the array namespace); products below
    ``tiny·2**20`` flushed to zero."""
    xp = array_namespace(A)
    axis = -3 if dense else -2
    tail = (slice(None),) * (-axis - 1)
    P = A
    while P.shape[axis] > 1:
        n = P.shape[axis]
        even = n - n % 2
        lo, hi = P[(..., slice(0, even, 2), *tail)], P[(..., slice(1, even, 2), *tail)]
        prod = _flush(xp.matmul(hi, lo) if dense else hi * lo, xp)
        if n % 2:  # the odd last factor goes on to the next level, still last
            prod = xp.concatenate([prod, P[(..., slice(n - 1, n), *tail)]], axis=axis)
        P = prod
    return P[(..., 0, *tail)]


@numba.njit(cache=True, nogil=True, parallel=True)
def _chunk_summaries(A, V, cs, E, PHI):  # pragma: no cover - jitted
    """Per (batch element, chunk of ``cs`` steps), in parallel: the chunk's end state from a
    zero carry-in into ``E`` and its transfer map into ``PHI`` (no T-sized temporaries)."""
    B, T = V.shape[0], V.shape[1]
    C = E.shape[1]
    for task in numba.prange(B * C):
        bi, c = task // C, task % C
        _end_chunk(A[bi], V[bi], c * cs, min(cs, T - c * cs), 1, 0, None, E[bi, c], PHI[bi, c])


def _summary(A: Any, v: Any, dense: bool, kernel: str) -> tuple[Any, Any]:
    """``(Φ, e)`` of this rank's slice: the transfer map and the end state from a zero
    carry-in. NumPy arrays on a Numba kernel: one parallel pass over chunks (one per
    thread) and a fold of the chunks' summaries; else a local scan and
    :func:`chain_product`."""
    xp = array_namespace(A, v)
    if is_cupy_array(v) or not kernel.startswith("numba"):
        zero = xp.zeros((*v.shape[:-2], v.shape[-1]), dtype=v.dtype)
        e = affine_scan(A, v, zero, kernel=kernel)[..., -1, :]
        return chain_product(A, dense), e
    batch, (T, D) = v.shape[:-2], v.shape[-2:]
    Ab = np.ascontiguousarray(A.reshape(-1, *A.shape[len(batch):]))
    Vb = np.ascontiguousarray(v.reshape(-1, T, D))
    C = max(1, min(T, numba.get_num_threads()))
    cs = -(-T // C)
    C = -(-T // cs)
    E = np.empty((Vb.shape[0], C, D), dtype=v.dtype)
    PHI = np.empty((Vb.shape[0], C, *Ab.shape[2:]), dtype=v.dtype)
    _chunk_summaries(Ab, Vb, cs, E, PHI)
    Phi, e = PHI[:, 0], E[:, 0]
    for c in range(1, C):  # later chunk after the earlier: (Φ_c, e_c) ∘ (Φ, e)
        e = _apply(PHI[:, c], e, dense) + E[:, c]
        Phi = np.matmul(PHI[:, c], Phi) if dense else PHI[:, c] * Phi
    return Phi.reshape(*batch, *Phi.shape[1:]), e.reshape(*batch, D)


def _identity(v: Any, dense: bool) -> Any:
    """The identity transfer map of an empty slice, per batch element of ``v``."""
    xp, D = array_namespace(v), v.shape[-1]
    one = xp.eye(D, dtype=v.dtype) if dense else xp.ones(D, dtype=v.dtype)
    return xp.broadcast_to(one, (*v.shape[:-2], *one.shape)).copy()


def _apply(Phi: Any, x: Any, dense: bool, transpose: bool = False) -> Any:
    if not dense:
        return Phi * x
    xp = array_namespace(Phi, x)
    M = xp.swapaxes(Phi, -1, -2) if transpose else Phi
    return xp.matmul(M, x[..., None])[..., 0]


def _gather(comm: Any, A: Any, v: Any, Phi: Any, s: Any, extra: Any,
            allow_empty: bool = False) -> list[tuple]:
    """Allgather every rank's summary with what validates it; raise the same error on every
    rank if the slices do not fit together."""
    meta = (v.shape[:-2], v.shape[-2], v.shape[-1], str(v.dtype), A.ndim - v.ndim)
    parts = comm.allgather((meta, Phi, s, extra))
    metas = [p[0] for p in parts]
    empty = [r for r, m in enumerate(metas) if m[1] == 0]
    if empty and not allow_empty:
        raise ValueError(f"the time slices of ranks {empty} are empty: every rank needs at "
                         "least one step")
    keys = {(m[0], m[2], m[3], m[4]) for m in metas}
    if len(keys) > 1:
        desc = "; ".join(f"rank {r}: batch {m[0]}, D={m[2]}, {m[3]}, "
                         f"{'dense' if m[4] else 'diagonal'}" for r, m in enumerate(metas))
        raise ValueError(f"the ranks' slices disagree in batch shape, width, dtype or kind: "
                         f"{desc}")
    return parts


def scan_distributed(A: Any, b: Any, h0: Any, comm: Any, *, kernel: str = "numba",
                     chunk_size: int | None = None, carry: bool = False,
                     allow_empty: bool = False) -> Any:
    r"""This rank's states of :math:`h_t = A_t h_{t-1} + b_t` over a time axis split across
    the ranks of ``comm`` (see the module docstring): ``A`` ``(..., n_r, D[, D])`` and ``b``
    ``(..., n_r, D)`` are this rank's slice, ``h0`` ``(..., D)`` is rank 0's (other ranks
    may pass None). ``kernel``/``chunk_size``: the local scans' (see
    :func:`pitsolve.kernels.affine_scan`). One ``allgather`` of O(D²) per rank. With
    ``carry``, also the carry-in :math:`h_{s_r - 1}` (rank 0: :math:`h_0`). An empty slice
    is an error unless ``allow_empty`` (it then passes its carry on unchanged: the identity
    map, for solvers whose active part of a slice has shrunk to nothing)."""
    xp = array_namespace(A, b)
    dense = A.ndim == b.ndim + 1
    rank = comm.Get_rank()
    if rank == comm.Get_size() - 1:  # no rank after the last needs its summary
        Phi = e = None
    elif b.shape[-2] == 0:
        Phi, e = _identity(b, dense), xp.zeros((*b.shape[:-2], b.shape[-1]), dtype=b.dtype)
    else:
        Phi, e = _summary(A, b, dense, kernel)
    parts = _gather(comm, A, b, Phi, e, h0 if rank == 0 else None, allow_empty)
    if parts[0][3] is None:
        raise ValueError("h0 must be given on rank 0")
    c = xp.asarray(parts[0][3], dtype=b.dtype)
    for _, Phi_q, e_q, _ in parts[:rank]:
        c = _apply(xp.asarray(Phi_q), c, dense) + xp.asarray(e_q)
    states = b.copy() if b.shape[-2] == 0 else affine_scan(A, b, c, kernel=kernel,
                                                            chunk_size=chunk_size)
    return (states, c) if carry else states


def previous_state(states: Any, h0: Any, comm: Any) -> Any:
    """:math:`h_{s_r - 1}`, the state before this rank's slice: the previous rank's last
    state (rank 0: ``h0``), by one ``allgather`` of the ranks' last states."""
    last = comm.allgather(states[..., -1, :])
    rank = comm.Get_rank()
    return h0 if rank == 0 else last[rank - 1]


def scan_transpose_distributed(A: Any, g: Any, comm: Any, *, kernel: str = "numba",
                               chunk_size: int | None = None,
                               allow_empty: bool = False) -> tuple[Any, Any]:
    r"""This rank's slice of :math:`\lambda_t = g_t + A_{t+1}^\top\lambda_{t+1}` over a time
    axis split across the ranks of ``comm``, and on rank 0 the cotangent of :math:`h_0`,
    :math:`A_0^\top\lambda_0` (None on the other ranks). Arrays as for
    :func:`scan_distributed`; one ``allgather``. An empty slice (``allow_empty``) passes the
    incoming cotangent on unchanged."""
    xp = array_namespace(A, g)
    dense = A.ndim == g.ndim + 1
    rank = comm.Get_rank()
    if rank == 0:  # no rank before the first needs its summary
        Phi = o = None
    elif g.shape[-2] == 0:
        Phi, o = _identity(g, dense), xp.zeros((*g.shape[:-2], g.shape[-1]), dtype=g.dtype)
    else:
        o = affine_scan_transpose(A, g, kernel=kernel, chunk_size=chunk_size)[1]
        Phi = _summary(A, g, dense, kernel)[0]
    parts = _gather(comm, A, g, Phi, o, None, allow_empty)
    if g.shape[-2] == 0:
        return g.copy(), (xp.zeros((*g.shape[:-2], g.shape[-1]), dtype=g.dtype) if rank == 0
                          else None)
    incoming = xp.zeros((*g.shape[:-2], g.shape[-1]), dtype=g.dtype)
    for _, Phi_q, o_q, _ in reversed(parts[rank + 1 :]):
        incoming = _apply(xp.asarray(Phi_q), incoming, dense, transpose=True) + xp.asarray(o_q)
    g = g.copy()
    g[..., -1, :] += incoming
    lam, out = affine_scan_transpose(A, g, kernel=kernel, chunk_size=chunk_size)
    return lam, out if rank == 0 else None
