r"""The shPLRNN and clipped shPLRNN on a CUDA device: f and its Jacobian in one kernel.

One thread per (row n, unit i) of ``Z`` ``(N, M)``: the pre-activations
:math:`u = W_2 z + h_2` (and :math:`u_0 = W_2 z` for the clipped model), the activation
pattern :math:`m_j = 1[u_j > 0]\,(- 1[u_{0,j} > 0])`, and

.. math::

    f_i = a_i z_i + \sum_j (W_1)_{ij}\phi_j + (h_1)_i, \qquad
    J_{ik} = a_i\delta_{ik} + \sum_{j:\,m_j \ne 0} (W_1)_{ij} m_j (W_2)_{jk}

(``jac = 2``: the row :math:`J_{i,:}`; ``jac = 1``: :math:`J_{ii}` only; ``jac = 0``: f
only). Each thread recomputes the pre-activations (O(L M)) and sums its Jacobian row over
the active units only (O(L M) at most): no (N, L) intermediate is written, and J is written
once. The array-namespace code (:mod:`pitsolve.models.plrnn.shplrnn`) is the twin.
"""

from __future__ import annotations

from typing import Any

from numba import cuda

from ...kernels.cuda._device import split_index
from ...kernels.cuda.registry import launch, register

__all__ = ["shplrnn_eval"]

_M = "{f}[:, ::1]"
_V = "{f}[::1]"


@register(f"void({_V}, {_M}, {_M}, {_V}, {_V}, boolean, {_M}, int64, {_M}, {{f}}[:, :, ::1], "
          f"{_M})")
@cuda.jit
def shplrnn_kernel(a, W1, W2, h1, h2, clipped, Z, jac, F, J, Dg):  # pragma: no cover
    """Per (row, unit i): ``F[n, i]``, and ``J[n, i, :]`` (jac 2) or ``Dg[n, i]`` (jac 1)."""
    t = cuda.grid(1)
    N, M = Z.shape
    L = W2.shape[0]
    if t >= N * M:
        return
    n, _, i = split_index(t, M, 1)
    zero = a[i] * 0
    fi = a[i] * Z[n, i] + h1[i]
    if jac == 2:
        for k in range(M):
            J[n, i, k] = zero
        J[n, i, i] = a[i]
    dg = a[i]
    for j in range(L):
        u0 = zero
        for k in range(M):
            u0 += W2[j, k] * Z[n, k]
        u = u0 + h2[j]
        phi = max(u, zero)
        m = zero + 1 if u > 0 else zero
        if clipped:
            phi -= max(u0, zero)
            if u0 > 0:
                m -= 1
        fi += W1[i, j] * phi
        if m != 0:
            w = W1[i, j] * m
            if jac == 2:
                for k in range(M):
                    J[n, i, k] += w * W2[j, k]
            elif jac == 1:
                dg += w * W2[j, i]
    F[n, i] = fi
    if jac == 1:
        Dg[n, i] = dg


def shplrnn_eval(p: dict[str, Any], clipped: bool, z: Any, jac: str, xp: Any) -> tuple[Any, Any]:
    """``(f, J)`` at ``z`` ``(..., M)`` (C-contiguous rows, the parameters' dtype), J dense
    ``(..., M, M)`` for ``jac="dense"``, its diagonal ``(..., M)`` for ``"diag"``, None for
    ``""``."""
    M = z.shape[-1]
    Z = xp.ascontiguousarray(z.reshape(-1, M))
    N = Z.shape[0]
    F = xp.empty((N, M), dtype=Z.dtype)
    mode = {"": 0, "diag": 1, "dense": 2}[jac]
    J = xp.empty((N if mode == 2 else 1, M, M), dtype=Z.dtype)
    Dg = xp.empty((N if mode == 1 else 1, M), dtype=Z.dtype)
    launch(shplrnn_kernel, N * M, p["a"], p["W1"], p["W2"], p["h1"], p["h2"], bool(clipped),
           Z, mode, F, J, Dg)
    lead = z.shape[:-1]
    if mode == 0:
        return F.reshape(*lead, M), None
    return F.reshape(*lead, M), Dg.reshape(*lead, M) if mode == 1 else J.reshape(*lead, M, M)
