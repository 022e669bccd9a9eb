r"""Compiled RK4 loops of the Lorenz-63 vector field: forward and backward (BPTT).

The stages are written out for the three components, so the loop keeps the state in
registers; no ``fastmath``, so NaN/Inf propagate as in the NumPy code.
"""

from __future__ import annotations

import numba

__all__ = ["lorenz63_rk4", "lorenz63_rk4_bptt"]

_JIT = {"cache": True, "nogil": True}


@numba.njit(**_JIT)
def _lorenz63(x, y, z, sigma, rho, beta):  # pragma: no cover - jitted
    return sigma * (y - x), x * (rho - z) - y, x * y - beta * z


@numba.njit(**_JIT)
def lorenz63_rk4(h0, out, sigma, rho, beta, half_dt, dt, sixth_dt, two):  # pragma: no cover
    r"""Classical RK4 steps of the Lorenz-63 field; scalars arrive in the arrays' dtype so a
    float32 run computes in float32 (as the NumPy loop over ``f`` does)."""
    B, T, _ = out.shape
    for b in range(B):
        x, y, z = h0[b, 0], h0[b, 1], h0[b, 2]
        for t in range(T):
            a1, b1, c1 = _lorenz63(x, y, z, sigma, rho, beta)
            a2, b2, c2 = _lorenz63(
                x + half_dt * a1, y + half_dt * b1, z + half_dt * c1, sigma, rho, beta
            )
            a3, b3, c3 = _lorenz63(
                x + half_dt * a2, y + half_dt * b2, z + half_dt * c2, sigma, rho, beta
            )
            a4, b4, c4 = _lorenz63(x + dt * a3, y + dt * b3, z + dt * c3, sigma, rho, beta)
            x = x + sixth_dt * (a1 + two * a2 + two * a3 + a4)
            y = y + sixth_dt * (b1 + two * b2 + two * b3 + b4)
            z = z + sixth_dt * (c1 + two * c2 + two * c3 + c4)
            out[b, t, 0] = x
            out[b, t, 1] = y
            out[b, t, 2] = z


# --------------------------------------------------------------------------------------------
# Backpropagation through time: one backward loop over t per batch element. λ enters each
# step as g_t plus the carried J_{t+1}ᵀ λ_{t+1}; parameter cotangents accumulate in place into
# arrays the caller zeroes; h0_bar gets J_1ᵀ λ_1 and x_bar the input cotangents.
# --------------------------------------------------------------------------------------------


@numba.njit(**_JIT)
def _lorenz63_vjp(x, y, z, ux, uy, uz, sigma, rho, beta):  # pragma: no cover - jitted
    r""":math:`G^\top u` of the Lorenz-63 field at ``(x, y, z)``."""
    return (
        -sigma * ux + (rho - z) * uy + y * uz,
        sigma * ux - uy + x * uz,
        -x * uy - beta * uz,
    )


@numba.njit(**_JIT)
def lorenz63_rk4_bptt(
    h0, states, g, sigma, rho, beta, half_dt, dt, sixth_dt, third_dt, two, grads, h0_bar
):  # pragma: no cover - jitted
    r"""BPTT of the classical RK4 step of Lorenz-63 (see :class:`pitsolve.models.ODEStep`).

    Per step the stage points are recomputed from :math:`h_{t-1}` as in :func:`lorenz63_rk4`;
    with :math:`u = \lambda_t`: :math:`\bar k_4 = \tfrac{\Delta t}{6} u`,
    :math:`\bar k_3 = \tfrac{\Delta t}{3} u + \Delta t\, G_4^\top \bar k_4`,
    :math:`\bar k_2 = \tfrac{\Delta t}{3} u + \tfrac{\Delta t}{2} G_3^\top \bar k_3`,
    :math:`\bar k_1 = \tfrac{\Delta t}{6} u + \tfrac{\Delta t}{2} G_2^\top \bar k_2`,
    :math:`J^\top u = u + \sum_i G_i^\top \bar k_i`; ``grads`` ``(3,)`` accumulates
    :math:`(\bar\sigma, \bar\rho, \bar\beta) \mathrel{+}= \sum_i (\bar k_{i,x}(y_i - x_i),\
    \bar k_{i,y} x_i, -\bar k_{i,z} z_i)` over the stage points :math:`(x_i, y_i, z_i)`.
    """
    B, T, _ = states.shape
    zero = states.dtype.type(0)
    gs, gr, gbeta = zero, zero, zero
    for b in range(B):
        cx, cy, cz = zero, zero, zero
        for t in range(T - 1, -1, -1):
            hp = states[b, t - 1] if t > 0 else h0[b]
            x1, y1, z1 = hp[0], hp[1], hp[2]
            a1, b1, c1 = _lorenz63(x1, y1, z1, sigma, rho, beta)
            x2, y2, z2 = x1 + half_dt * a1, y1 + half_dt * b1, z1 + half_dt * c1
            a2, b2, c2 = _lorenz63(x2, y2, z2, sigma, rho, beta)
            x3, y3, z3 = x1 + half_dt * a2, y1 + half_dt * b2, z1 + half_dt * c2
            a3, b3, c3 = _lorenz63(x3, y3, z3, sigma, rho, beta)
            x4, y4, z4 = x1 + dt * a3, y1 + dt * b3, z1 + dt * c3
            ux, uy, uz = g[b, t, 0] + cx, g[b, t, 1] + cy, g[b, t, 2] + cz
            k4x, k4y, k4z = sixth_dt * ux, sixth_dt * uy, sixth_dt * uz
            a4x, a4y, a4z = _lorenz63_vjp(x4, y4, z4, k4x, k4y, k4z, sigma, rho, beta)
            k3x = third_dt * ux + dt * a4x
            k3y = third_dt * uy + dt * a4y
            k3z = third_dt * uz + dt * a4z
            a3x, a3y, a3z = _lorenz63_vjp(x3, y3, z3, k3x, k3y, k3z, sigma, rho, beta)
            k2x = third_dt * ux + half_dt * a3x
            k2y = third_dt * uy + half_dt * a3y
            k2z = third_dt * uz + half_dt * a3z
            a2x, a2y, a2z = _lorenz63_vjp(x2, y2, z2, k2x, k2y, k2z, sigma, rho, beta)
            k1x = sixth_dt * ux + half_dt * a2x
            k1y = sixth_dt * uy + half_dt * a2y
            k1z = sixth_dt * uz + half_dt * a2z
            a1x, a1y, a1z = _lorenz63_vjp(x1, y1, z1, k1x, k1y, k1z, sigma, rho, beta)
            gs += ((k1x * (y1 - x1) + k2x * (y2 - x2)) + k3x * (y3 - x3)) + k4x * (y4 - x4)
            gr += ((k1y * x1 + k2y * x2) + k3y * x3) + k4y * x4
            gbeta -= ((k1z * z1 + k2z * z2) + k3z * z3) + k4z * z4
            cx = ux + ((a1x + a2x) + (a3x + a4x))
            cy = uy + ((a1y + a2y) + (a3y + a4y))
            cz = uz + ((a1z + a2z) + (a3z + a4z))
        h0_bar[b, 0] = cx
        h0_bar[b, 1] = cy
        h0_bar[b, 2] = cz
    grads[0] += gs
    grads[1] += gr
    grads[2] += gbeta
