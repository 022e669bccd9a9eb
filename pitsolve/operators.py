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

On a time axis split over MPI ranks (``slices``) the window is this rank's part of a window
that runs over all ranks: :math:`v` before it is the rank before's last (one halo exchange per
product), :math:`J_{t+1}^\top u_{t+1}` after it comes from the rank after (one exchange
back), the preconditioner's scans run across the ranks, and GMRES sums its inner products over
them.
"""

from __future__ import annotations

from typing import Any

from .kernels.krylov import KrylovResult
from .models.base import linearize
from .parallel.slices import TimeSlices

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
    slices
        a :class:`~pitsolve.parallel.slices.TimeSlices` when the window is split over MPI
        ranks (the module docstring); None in one process.

    Attributes
    ----------
    products, scans
        products with :math:`J_F` or :math:`J_F^\top`, and preconditioner scans, so far.
    """

    def __init__(self, model: Any, prev: Any, x: Any, backend: Any, *, diagonal: Any = None,
                 chunk_size: int | None = None, slices: TimeSlices | None = None):
        self.model, self.prev, self.x, self.backend = model, prev, x, backend
        self.shape = prev.shape
        self.chunk_size = chunk_size
        self._diagonal = diagonal
        self.slices = TimeSlices() if slices is None else slices
        # J_t for the steps after the first (the first one's J multiplies v = 0 before it; on
        # a split time axis, the rank before's last v: every step's)
        self.lin = None
        first = 0 if self.slices.split else 1
        if self.shape[-2] > first:
            self.lin = linearize(model, prev[..., first:, :],
                                 None if x is None else x[..., first:, :])
        self.products = 0
        self.scans = 0

    def matvec(self, v: Any) -> Any:
        r""":math:`J_F v` for ``v`` of the window's shape ``(..., n, D)``."""
        xp = self.backend.xp
        self.products += 1
        out = xp.empty_like(v)
        if self.slices.split:  # v before this rank's part: the rank before's last (or 0)
            before = self.slices.halo(v[..., -1, :] if v.shape[-2] else None, None)
            if before is None:
                before = xp.zeros((*v.shape[:-2], v.shape[-1]), dtype=v.dtype)
            if self.lin is not None:
                prev = xp.concatenate([before[..., None, :], v[..., :-1, :]], axis=-2)
                self.lin.jvp(prev, out=out)
            return xp.subtract(v, out, out=out)
        out[..., 0, :] = 0
        if self.lin is not None:
            self.lin.jvp(v[..., :-1, :], out=out[..., 1:, :])
        return xp.subtract(v, out, out=out)

    def rmatvec(self, u: Any) -> Any:
        r""":math:`J_F^\top u` for ``u`` of the window's shape ``(..., n, D)``."""
        xp = self.backend.xp
        self.products += 1
        out = xp.empty_like(u)
        if self.slices.split:  # J_{t+1}ᵀ u_{t+1} after this rank's part: from the rank after
            back = xp.empty_like(u)
            if self.lin is not None:
                self.lin.vjp(u, out=back)
            after = self.slices.halo_back(back[..., 0, :] if u.shape[-2] else None, None)
            if u.shape[-2]:
                out[..., :-1, :] = back[..., 1:, :]
                out[..., -1, :] = 0 if after is None else after
            return xp.subtract(u, out, out=out)
        out[..., -1, :] = 0
        if self.lin is not None:
            self.lin.vjp(u[..., 1:, :], out=out[..., :-1, :])
        return xp.subtract(u, out, out=out)

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
        return self.slices.scan(self.backend, self.diagonal, y, zero, chunk_size=self.chunk_size)

    def precondition_transpose(self, y: Any) -> Any:
        r""":math:`z` with :math:`z_t - d_{t+1} \odot z_{t+1} = y_t` (one transposed scan)."""
        self.scans += 1
        return self.slices.scan_transpose(self.backend, self.diagonal, y,
                                          chunk_size=self.chunk_size)[0]

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
                                    else None, rtol=rtol, restart=restart, maxiter=maxiter,
                                    total=self.slices.sum if self.slices.split else None)
        return result._replace(x=result.x.reshape(shape))
