r"""Scans of affine maps written against the array namespace ``xp`` (NumPy or CuPy).

Every function here runs unchanged on NumPy and CuPy arrays; they are the reference twins of
the compiled kernels (the blocked scan is the algorithm GPU kernels run, tested on the CPU).

Layout: ``A`` is ``(B, T, D)`` (diagonal) or ``(B, T, D, D)`` (dense), ``b``/``g`` ``(B, T, D)``,
``h0`` ``(B, D)``; 0-based time.

* forward:  :math:`h_t = A_t h_{t-1} + b_t`, :math:`h_{-1} = h_0`;
* reverse (transposed): :math:`\lambda_{T-1} = g_{T-1}`,
  :math:`\lambda_t = g_t + A_{t+1}^\top \lambda_{t+1}` (``A_0`` is never used).
"""

from __future__ import annotations

from typing import Any

from .._arrays import array_namespace

__all__ = [
    "reverse_as_forward",
    "scan_blocked",
    "scan_blocked_reverse",
    "scan_logdepth",
    "scan_logdepth_reverse",
    "scan_loop",
    "scan_loop_reverse",
]


def _apply(A: Any, h: Any, xp: Any) -> Any:
    """A h for diagonal (A.ndim == h.ndim) or dense (A.ndim == h.ndim + 1) maps, batched."""
    if A.ndim == h.ndim:
        return A * h
    return xp.matmul(A, h[..., None])[..., 0]


def reverse_as_forward(A: Any, g: Any, xp: Any = None) -> tuple[Any, Any]:
    r"""Rewrite the reverse scan as a forward scan on new arrays (copies; a reference tool).

    With :math:`s = T-1-t`: :math:`\lambda'_s = g'_s + A'_s \lambda'_{s-1}` where
    :math:`A'_s = A_{T-s}^\top` for s ≥ 1 and :math:`A'_0 = 0` (zero carry-in).
    """
    xp = xp or array_namespace(A, g)
    dense = A.ndim == 4
    A_rev = xp.flip(A, axis=1)
    if dense:
        A_rev = xp.swapaxes(A_rev, -1, -2)
    A_fwd = xp.concatenate([xp.zeros_like(A_rev[:, :1]), A_rev[:, :-1]], axis=1)
    return xp.ascontiguousarray(A_fwd), xp.ascontiguousarray(xp.flip(g, axis=1))


def _zeros_h0(g: Any, xp: Any) -> Any:
    return xp.zeros((g.shape[0], g.shape[2]), dtype=g.dtype)


def scan_loop(A: Any, b: Any, h0: Any, *, xp: Any = None) -> Any:
    """The forward recurrence as a Python loop over time, vectorised over the batch."""
    xp = xp or array_namespace(A, b, h0)
    out = xp.empty_like(b)
    h = h0
    for t in range(b.shape[1]):
        h = _apply(A[:, t], h, xp) + b[:, t]
        out[:, t] = h
    return out


def scan_loop_reverse(A: Any, g: Any, *, xp: Any = None) -> Any:
    """The reverse (transposed) recurrence as a Python loop over time."""
    xp = xp or array_namespace(A, g)
    A_fwd, g_fwd = reverse_as_forward(A, g, xp)
    return xp.flip(scan_loop(A_fwd, g_fwd, _zeros_h0(g, xp), xp=xp), axis=1)


def scan_blocked(A: Any, b: Any, h0: Any, *, chunk_size: int | None = None, xp: Any = None) -> Any:
    r"""Blocked three-phase scan, vectorised over (batch, chunk): the GPU algorithm's twin.

    1. per chunk (all at once): end state :math:`e_c` from zero carry-in and transfer map
       :math:`\Phi_c = A_{end} \cdots A_{start}`;
    2. across chunks, in order: :math:`carry_c = \Phi_{c-1} carry_{c-1} + e_{c-1}`;
    3. per chunk (all at once): re-run from the true carry-in.

    ``chunk_size`` defaults to about √T, which balances the two sequential loops (over the
    chunk length and over the chunks).
    """
    xp = xp or array_namespace(A, b, h0)
    B, T, D = b.shape
    dense = A.ndim == 4
    L = chunk_size or max(1, round(T**0.5))
    C = -(-T // L)
    pad = C * L - T
    if pad:
        zb = xp.zeros((B, pad, D), dtype=b.dtype)
        b = xp.concatenate([b, zb], axis=1)
        A = xp.concatenate([A, xp.zeros((B, pad, *A.shape[2:]), dtype=A.dtype)], axis=1)
    Ac = A.reshape(B, C, L, *A.shape[2:])
    bc = b.reshape(B, C, L, D)
    # phase 1
    e = xp.zeros((B, C, D), dtype=b.dtype)
    if dense:
        Phi = xp.broadcast_to(xp.eye(D, dtype=b.dtype), (B, C, D, D)).copy()
    else:
        Phi = xp.ones((B, C, D), dtype=b.dtype)
    for l in range(L):
        e = _apply(Ac[:, :, l], e, xp) + bc[:, :, l]
        Phi = xp.matmul(Ac[:, :, l], Phi) if dense else Ac[:, :, l] * Phi
    # phase 2
    carry = xp.empty((B, C, D), dtype=b.dtype)
    carry[:, 0] = h0
    for c in range(1, C):
        carry[:, c] = _apply(Phi[:, c - 1], carry[:, c - 1], xp) + e[:, c - 1]
    # phase 3
    out = xp.empty((B, C, L, D), dtype=b.dtype)
    h = carry
    for l in range(L):
        h = _apply(Ac[:, :, l], h, xp) + bc[:, :, l]
        out[:, :, l] = h
    return out.reshape(B, C * L, D)[:, :T]


def scan_blocked_reverse(A: Any, g: Any, *, chunk_size: int | None = None, xp: Any = None) -> Any:
    """The reverse (transposed) scan by the blocked algorithm."""
    xp = xp or array_namespace(A, g)
    A_fwd, g_fwd = reverse_as_forward(A, g, xp)
    out = scan_blocked(A_fwd, g_fwd, _zeros_h0(g, xp), chunk_size=chunk_size, xp=xp)
    return xp.flip(out, axis=1)


def scan_logdepth(A: Any, b: Any, h0: Any, *, xp: Any = None) -> Any:
    r"""Hillis–Steele scan: ⌈log₂ T⌉ levels, each one batched composition of affine maps.

    After folding :math:`h_0` into :math:`b_0`, level k replaces map t by
    :math:`(A_t, b_t) \circ (A_{t-2^k}, b_{t-2^k})` for t ≥ 2^k. Work O(T log T) (diagonal)
    or O(T D³ log T) (dense); depth O(log T).
    """
    xp = xp or array_namespace(A, b, h0)
    T = b.shape[1]
    dense = A.ndim == 4
    b = b.copy()
    b[:, 0] = _apply(A[:, 0], h0, xp) + b[:, 0]
    A = A.copy()
    off = 1
    while off < T:
        b_new = b.copy()
        b_new[:, off:] = _apply(A[:, off:], b[:, :-off], xp) + b[:, off:]
        if 2 * off < T:  # the last level needs no composed A
            A_new = A.copy()
            lo, hi = A[:, :-off], A[:, off:]
            A_new[:, off:] = xp.matmul(hi, lo) if dense else hi * lo
            A = A_new
        b = b_new
        off *= 2
    return b


def scan_logdepth_reverse(A: Any, g: Any, *, xp: Any = None) -> Any:
    """The reverse (transposed) scan by the log-depth algorithm."""
    xp = xp or array_namespace(A, g)
    A_fwd, g_fwd = reverse_as_forward(A, g, xp)
    return xp.flip(scan_logdepth(A_fwd, g_fwd, _zeros_h0(g, xp), xp=xp), axis=1)
