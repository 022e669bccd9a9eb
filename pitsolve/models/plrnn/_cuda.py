r"""The PLRNN family on a CUDA device: f and its Jacobian in one kernel.

One thread per (row n, unit i) of ``Z`` ``(N, M)``, M ≤ :data:`MAX_STATE` (the Jacobian row
is accumulated in registers/local memory and written once; for larger M the models take
their array-namespace code, whose dense Jacobians are one GEMM). ``jac = 2``: the row
:math:`J_{i,:}`; ``jac = 1``: :math:`J_{ii}` only; ``jac = 0``: f only.

* shPLRNN and clipped shPLRNN: the pre-activations :math:`u = W_2 z + h_2` (and
  :math:`u_0 = W_2 z` for the clipped model), the activation pattern
  :math:`m_j = 1[u_j > 0]\,(- 1[u_{0,j} > 0])`,

  .. math::

      f_i = a_i z_i + \sum_j (W_1)_{ij}\phi_j + (h_1)_i, \qquad
      J_{ik} = a_i\delta_{ik} + \sum_{j:\,m_j \ne 0} (W_1)_{ij} m_j (W_2)_{jk};

  each thread recomputes the pre-activations (O(L M)) and sums over the active units only;
* ALRNN: :math:`f_i = a_i z_i + \sum_k W_{ik}\Phi(z_k) + h_i`,
  :math:`J_{ik} = a_i\delta_{ik} + W_{ik}\Phi'(z_k)` with :math:`\Phi` the identity on the
  first M − P units and relu on the last P.

The array-namespace code of :mod:`pitsolve.models.plrnn` is the twin.
"""

from __future__ import annotations

from typing import Any

from numba import cuda

from ...kernels.cuda._device import split_index
from ...kernels.cuda.registry import launch, register

__all__ = ["MAX_STATE", "alrnn_eval", "shplrnn_eval"]

#: Largest state dimension M of the kernels.
MAX_STATE = 64

_M = "{f}[:, ::1]"
_V = "{f}[::1]"
_J = "{f}[:, :, ::1]"


@cuda.jit(device=True, inline=True)
def _store(F, J, Dg, n, i, fi, row, jac, M):  # pragma: no cover - device code
    """Write f_i and the requested part of the Jacobian row ``row``."""
    F[n, i] = fi
    if jac == 2:
        for k in range(M):
            J[n, i, k] = row[k]
    elif jac == 1:
        Dg[n, i] = row[i]


@register(f"void({_V}, {_M}, {_M}, {_V}, {_V}, boolean, {_M}, int64, {_M}, {_J}, {_M})")
@cuda.jit(cache=True)
def shplrnn_kernel(a, W1, W2, h1, h2, clipped, Z, jac, F, J, Dg):  # pragma: no cover
    """Per (row, unit i): ``F[n, i]``, and ``J[n, i, :]`` (jac 2) or ``Dg[n, i]`` (jac 1)."""
    t = cuda.grid(1)
    N, M = Z.shape
    L = W2.shape[0]
    if t >= N * M:
        return
    n, _, i = split_index(t, M, 1)
    row = cuda.local.array(MAX_STATE, Z.dtype)
    zero = a[i] * 0
    for k in range(M):
        row[k] = zero
    row[i] = a[i]
    fi = a[i] * Z[n, i] + h1[i]
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
                    row[k] += w * W2[j, k]
            elif jac == 1:
                row[i] += w * W2[j, i]
    _store(F, J, Dg, n, i, fi, row, jac, M)


@register(f"void({_V}, {_M}, {_V}, int64, {_M}, int64, {_M}, {_J}, {_M})")
@cuda.jit(cache=True)
def alrnn_kernel(a, W, h, P, Z, jac, F, J, Dg):  # pragma: no cover - device code
    """Per (row, unit i): ``F[n, i]``, and ``J[n, i, :]`` (jac 2) or ``Dg[n, i]`` (jac 1);
    the last ``P`` units are relu."""
    t = cuda.grid(1)
    N, M = Z.shape
    if t >= N * M:
        return
    n, _, i = split_index(t, M, 1)
    row = cuda.local.array(MAX_STATE, Z.dtype)
    zero = a[i] * 0
    fi = a[i] * Z[n, i] + h[i]
    for k in range(M):
        z = Z[n, k]
        d = zero + 1
        if k >= M - P and not z > 0:
            z = zero
            d = zero
        fi += W[i, k] * z
        row[k] = W[i, k] * d
    row[i] += a[i]
    _store(F, J, Dg, n, i, fi, row, jac, M)


def _launch(kernel: Any, params: tuple[Any, ...], z: Any, jac: str, xp: Any) -> tuple[Any, Any]:
    """Flatten ``z`` to rows, launch, unflatten: ``(f, J dense | diag J | None)``."""
    M = z.shape[-1]
    Z = xp.ascontiguousarray(z.reshape(-1, M))
    N = Z.shape[0]
    mode = {"": 0, "diag": 1, "dense": 2}[jac]
    F = xp.empty((N, M), dtype=Z.dtype)
    J = xp.empty((N if mode == 2 else 1, M, M), dtype=Z.dtype)
    Dg = xp.empty((N if mode == 1 else 1, M), dtype=Z.dtype)
    launch(kernel, N * M, *params, Z, mode, F, J, Dg)
    lead = z.shape[:-1]
    if mode == 0:
        return F.reshape(*lead, M), None
    return F.reshape(*lead, M), Dg.reshape(*lead, M) if mode == 1 else J.reshape(*lead, M, M)


def shplrnn_eval(p: dict[str, Any], clipped: bool, z: Any, jac: str, xp: Any) -> tuple[Any, Any]:
    """``(f, J)`` of the (clipped) shPLRNN at ``z`` ``(..., M)`` (the parameters' dtype); J
    dense ``(..., M, M)`` for ``jac="dense"``, its diagonal for ``"diag"``, None for ``""``."""
    return _launch(shplrnn_kernel, (p["a"], p["W1"], p["W2"], p["h1"], p["h2"], bool(clipped)),
                   z, jac, xp)


def alrnn_eval(p: dict[str, Any], relu_units: int, z: Any, jac: str, xp: Any) -> tuple[Any, Any]:
    """``(f, J)`` of the ALRNN at ``z`` (as :func:`shplrnn_eval`)."""
    return _launch(alrnn_kernel, (p["a"], p["W"], p["h"], int(relu_units)), z, jac, xp)
