r"""The Elman network and the GRU on a CUDA device: f and its dense Jacobian in one kernel.

The input projections :math:`P = U x + b` (one GEMM over all steps) are computed before, by
the array library; the kernels take ``H`` ``(N, D)`` and ``P`` ``(N, K D)`` and run one
thread per (row n, unit i), writing :math:`f_i` and the row :math:`J_{i,:}`:

* Elman: :math:`y_i = \tanh(W_{i,:} h + P_i)`, :math:`J_{ik} = (1 - y_i^2) W_{ik}`;
* GRU (the model's docstring has the maths): :math:`z_i, r_k, n_i` from the rows of
  :math:`W_z, W_r, W_n`, and

  .. math::

      J_{ik} = z_i\delta_{ik} + a_{z,i} (W_z)_{ik} + a_{n,i}\Big((W_n)_{ik} r_k
      + \sum_j (W_n)_{ij}\, c_j\, (W_r)_{jk}\Big),

  where :math:`c_j = h_j r_j (1 - r_j)`. The reset gates :math:`r_j` a thread needs are
  recomputed (O(D) each), so a thread costs O(D²) and no (N, D, D) temporary is formed:
  the array-namespace code forms two; here J is written once.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numba import cuda

from ...kernels.cuda._device import split_index
from ...kernels.cuda.registry import launch, register

__all__ = ["elman_eval", "gru_eval"]

_M = "{f}[:, ::1]"
_J = "{f}[:, :, ::1]"


@register(f"void({_M}, {_M}, {_M}, int64, {_M}, {_J}, {_M})")
@cuda.jit(cache=True)
def elman_kernel(W, H, P, jac, F, J, Dg):  # pragma: no cover - device code
    """Per (row, unit i): ``F[n, i] = tanh(W_i h + P_i)``; ``J[n, i, :] = (1 - F²) W_i``
    (jac 2) or ``Dg[n, i] = (1 - F²) W_ii`` (jac 1)."""
    t = cuda.grid(1)
    N, D = H.shape
    if t >= N * D:
        return
    n, _, i = split_index(t, D, 1)
    u = P[n, i]
    for k in range(D):
        u += W[i, k] * H[n, k]
    y = math.tanh(u)
    F[n, i] = y
    s = 1 - y * y
    if jac == 2:
        for k in range(D):
            J[n, i, k] = s * W[i, k]
    elif jac == 1:
        Dg[n, i] = s * W[i, i]


@cuda.jit(device=True, inline=True)
def _sigmoid(u):  # pragma: no cover - device code
    """:math:`1/(1+e^{-u})` without overflow."""
    e = math.exp(-abs(u))
    s = 1 / (1 + e)
    return s if u >= 0 else e * s


@cuda.jit(device=True, inline=True)
def _gate(Wg, H, P, n, i, off):  # pragma: no cover - device code
    """:math:`\\sigma(W_{g,i} h_n + P_{n, off + i})`."""
    u = P[n, off + i]
    for k in range(H.shape[1]):
        u += Wg[i, k] * H[n, k]
    return _sigmoid(u)


@register(f"void({_M}, {_M}, {_M}, {_M}, {_M}, int64, {_M}, {_J}, {_M})")
@cuda.jit(cache=True)
def gru_kernel(Wz, Wr, Wn, H, P, jac, F, J, Dg):  # pragma: no cover - device code
    """Per (row, unit i): ``F[n, i] = h'_i``, and ``J[n, i, :]`` (jac 2) or ``Dg[n, i]``
    (jac 1); ``P`` holds the input projections of the z, r and n gates side by side
    ``(N, 3D)``."""
    t = cuda.grid(1)
    N, D = H.shape
    if t >= N * D:
        return
    n, _, i = split_index(t, D, 1)
    z = _gate(Wz, H, P, n, i, 0)
    u = P[n, 2 * D + i]
    for k in range(D):
        u += Wn[i, k] * _gate(Wr, H, P, n, k, D) * H[n, k]
    g = math.tanh(u)
    h = H[n, i]
    F[n, i] = g + z * (h - g)
    if jac == 0:
        return
    az = (h - g) * z * (1 - z)
    an = (1 - z) * (1 - g * g)
    if jac == 1:  # z + az Wz_ii + an (Wn_ii r_i + sum_j Wn_ij c_j Wr_ji)
        r = _gate(Wr, H, P, n, i, D)
        acc = Wn[i, i] * r
        for j in range(D):
            rj = _gate(Wr, H, P, n, j, D)
            acc += Wn[i, j] * H[n, j] * rj * (1 - rj) * Wr[j, i]
        Dg[n, i] = z + az * Wz[i, i] + an * acc
        return
    for k in range(D):
        J[n, i, k] = az * Wz[i, k] + an * Wn[i, k] * _gate(Wr, H, P, n, k, D)
    J[n, i, i] += z
    for j in range(D):
        r = _gate(Wr, H, P, n, j, D)
        w = an * Wn[i, j] * H[n, j] * r * (1 - r)
        for k in range(D):
            J[n, i, k] += w * Wr[j, k]


_MODES = {"": 0, "diag": 1, "dense": 2}


def _run(kernel: Any, weights: tuple[Any, ...], h: Any, P: Any, jac: str,
         xp: Any) -> tuple[Any, Any]:
    """Broadcast ``h`` and ``P`` over their leading axes, launch, unflatten: ``(f, J dense |
    diag J | None)``."""
    D = h.shape[-1]
    lead = np.broadcast_shapes(h.shape[:-1], P.shape[:-1])
    H = xp.ascontiguousarray(xp.broadcast_to(h, (*lead, D)).reshape(-1, D))
    P = xp.ascontiguousarray(xp.broadcast_to(P, (*lead, P.shape[-1])).reshape(H.shape[0], -1))
    N = H.shape[0]
    mode = _MODES[jac]
    F = xp.empty((N, D), dtype=H.dtype)
    J = xp.empty((N if mode == 2 else 1, D, D), dtype=H.dtype)
    Dg = xp.empty((N if mode == 1 else 1, D), dtype=H.dtype)
    launch(kernel, N * D, *weights, H, P, mode, F, J, Dg)
    if mode == 0:
        return F.reshape(*lead, D), None
    return F.reshape(*lead, D), Dg.reshape(*lead, D) if mode == 1 else J.reshape(*lead, D, D)


def elman_eval(W: Any, h: Any, P: Any, jac: str, xp: Any) -> tuple[Any, Any]:
    """``(f, J)`` of the Elman network at ``h`` ``(..., D)`` with input projections ``P``
    (``(..., D)`` or ``(D,)``, broadcast); ``jac`` ``"dense"``, ``"diag"`` or ``""``."""
    return _run(elman_kernel, (W,), h, P, jac, xp)


def gru_eval(Wz: Any, Wr: Any, Wn: Any, h: Any, P: Any, jac: str, xp: Any) -> tuple[Any, Any]:
    """``(f, J)`` of the GRU at ``h`` ``(..., D)`` with input projections ``P`` of the three
    gates ``(..., 3D)`` (or ``(3D,)``, broadcast); ``jac`` as for :func:`elman_eval`."""
    return _run(gru_kernel, (Wz, Wr, Wn), h, P, jac, xp)
