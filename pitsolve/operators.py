r"""The trajectory Jacobian :math:`J_F`: set up once, applied forwards and transposed.

For the residual :math:`r_t(h) = h_t - f(h_{t-1}, x_t)` of n consecutive steps (a window,
with the state before it fixed), the Jacobian with respect to the window's states is the
block lower-bidiagonal operator

.. math::

    (J_F v)_t = v_t - J_t v_{t-1}\quad (v \text{ is } 0 \text{ before the window}),\qquad
    (J_F^\top u)_t = u_t - J_{t+1}^\top u_{t+1}\quad (u \text{ is } 0 \text{ after it}),

with :math:`J_t = \partial f/\partial h\,(h_{t-1}, x_t)`. Newton–Krylov solves
:math:`J_F\delta = -r` and the matrix-free adjoint :math:`J_F^\top\lambda = g` with it. Both
use the model's :meth:`~pitsolve.models.Model.linearize` evaluated once (every product is
then a JVP or a VJP with cached factors, no evaluation of f and no (T, D, D) array) and the
same preconditioner: the quasi-DEER operator, :math:`J_F` with :math:`J_t` replaced by its
diagonal :math:`d_t`, whose inverse is one diagonal scan, forward for :math:`J_F` and
transposed for :math:`J_F^\top`.
"""

from __future__ import annotations

from typing import Any

from .kernels.krylov import KrylovResult
from .models.base import linearize

__all__ = ["TrajectoryJacobian"]


class TrajectoryJacobian:
    r""":math:`J_F` of a window of n steps at a fixed trajectory (module docstring).

    Parameters
    ----------
    model
        the model, bound to ``backend`` (:meth:`~pitsolve.backends.Backend.bind`).
    prev
        :math:`h_{t-1}` for the window's n steps, ``(..., n, D)``.
    x
        the inputs :math:`x_t` of those steps ``(..., n, N_x)``, or None.
    backend
        the :class:`~pitsolve.backends.Backend` of the products, scans and GMRES.
    diagonal
        :math:`d_t = \operatorname{diag} J_t` for the n steps if the caller has them (a
        fused evaluation); else evaluated on first use of the preconditioner.
    chunk_size
        chunk length of the preconditioner's scans (None: automatic).

    Attributes
    ----------
    products, scans
        products with :math:`J_F` or :math:`J_F^\top`, and preconditioner scans, so far.
    """

    def __init__(self, model: Any, prev: Any, x: Any, backend: Any, *, diagonal: Any = None,
                 chunk_size: int | None = None):
        self.model, self.prev, self.x, self.backend = model, prev, x, backend
        self.shape = prev.shape
        self.chunk_size = chunk_size
        self._diagonal = diagonal
        # J_t for the steps after the first (the first one's J multiplies v = 0 before it)
        self.lin = None
        if self.shape[-2] > 1:
            self.lin = linearize(model, prev[..., 1:, :], None if x is None else x[..., 1:, :])
        self.products = 0
        self.scans = 0

    def matvec(self, v: Any) -> Any:
        r""":math:`J_F v` for ``v`` of the window's shape ``(..., n, D)``."""
        out = self.backend.xp.empty_like(v)
        out[..., 0, :] = 0
        if self.lin is not None:
            self.lin.jvp(v[..., :-1, :], out=out[..., 1:, :])
        self.products += 1
        return self.backend.xp.subtract(v, out, out=out)

    def rmatvec(self, u: Any) -> Any:
        r""":math:`J_F^\top u` for ``u`` of the window's shape ``(..., n, D)``."""
        out = self.backend.xp.empty_like(u)
        out[..., -1, :] = 0
        if self.lin is not None:
            self.lin.vjp(u[..., 1:, :], out=out[..., :-1, :])
        self.products += 1
        return self.backend.xp.subtract(u, out, out=out)

    @property
    def diagonal(self) -> Any:
        r""":math:`d_t = \operatorname{diag} J_t` for the window's steps."""
        if self._diagonal is None:
            self._diagonal = self.model.diagonal_jacobian(self.prev, self.x)
        return self._diagonal

    def precondition(self, y: Any) -> Any:
        r""":math:`z` with :math:`z_t - d_t \odot z_{t-1} = y_t` (one forward diagonal scan)."""
        self.scans += 1
        zero = self.backend.xp.zeros((*self.shape[:-2], self.shape[-1]), dtype=y.dtype)
        return self.backend.scan(self.diagonal, y, zero, chunk_size=self.chunk_size)

    def precondition_transpose(self, y: Any) -> Any:
        r""":math:`z` with :math:`z_t - d_{t+1} \odot z_{t+1} = y_t` (one transposed scan)."""
        self.scans += 1
        return self.backend.scan_transpose(self.diagonal, y, chunk_size=self.chunk_size)[0]

    def solve(self, rhs: Any, *, transpose: bool = False, rtol: float, restart: int,
              maxiter: int, precondition: bool = True) -> KrylovResult:
        r""":math:`J_F^{-1}` ``rhs`` (or :math:`J_F^{-\top}` ``rhs``) by the backend's GMRES to
        the relative tolerance ``rtol``, ``maxiter`` inner iterations at most, preconditioned
        by the quasi-DEER scan unless ``precondition=False``. ``x`` of the result has the
        shape of ``rhs``."""
        shape = rhs.shape
        apply = self.rmatvec if transpose else self.matvec
        inverse = self.precondition_transpose if transpose else self.precondition

        def matvec(v: Any) -> Any:
            return apply(v.reshape(shape)).reshape(-1)

        def psolve(v: Any) -> Any:
            return inverse(v.reshape(shape)).reshape(-1)

        result = self.backend.gmres(matvec, rhs.reshape(-1), psolve=psolve if precondition
                                    else None, rtol=rtol, restart=restart, maxiter=maxiter)
        return result._replace(x=result.x.reshape(shape))
