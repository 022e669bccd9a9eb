r"""The :class:`Backend`: what a solve needs from a device, chosen once and kept.

A backend bundles an array namespace (``xp``), the affine scans forward and transposed, the
Newton iterations' one-pass reductions (residual norms, the step update, finiteness), the
Kalman smoother of the Levenberg–Marquardt step, GMRES and host transfer. A solve asks
:func:`~pitsolve.backends.select` for one when it starts (from the problem's arrays and the
``backend=`` options), keeps it on its state and hands it to the model
(:meth:`Backend.bind`): from then on no algorithm and no model method looks at array types.

This base class is the reference: every method written against ``xp`` (the NumPy backend is
this class with ``xp = numpy``). Subclasses replace methods with compiled kernels
(:class:`~pitsolve.backends.numba.NumbaBackend`) or run on another device
(:class:`~pitsolve.backends.cupy.CupyBackend`).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, ClassVar

import numpy as np

from .._arrays import to_numpy
from ..kernels import affine_scan, affine_scan_transpose
from ..kernels.kalman import lm_smoother
from ..kernels.krylov import KrylovResult, gmres
from ..kernels.residual import residual_norms_xp
from ..kernels.update import all_finite_xp, apply_step_xp, step_size_xp

__all__ = ["SCAN_METHODS", "Backend"]

#: ``method=`` of the scans: ``"blocked"`` (chunked three-phase), ``"logdepth"``
#: (Hillis–Steele) or ``"sequential"`` (a loop over time).
SCAN_METHODS = ("blocked", "logdepth", "sequential")


class Backend:
    """One device's kernels behind one interface (see the module docstring).

    Attributes
    ----------
    name
        ``"numpy"``, ``"numba"`` or ``"cupy"``.
    xp
        the array namespace (``numpy`` or ``cupy``).
    compiled
        True if models evaluate with their compiled (Numba) kernels on this backend; models
        read it through :meth:`~pitsolve.models.Model.on`.
    cuda
        True if models evaluate with their CUDA kernels (:mod:`pitsolve.kernels.cuda`).
    """

    name: ClassVar[str] = "numpy"
    compiled: ClassVar[bool] = False
    cuda: bool = False
    #: kernel names of :func:`pitsolve.kernels.affine_scan` per scan method
    scan_kernels: ClassVar[dict[str, str]] = {
        "blocked": "numpy", "logdepth": "logdepth", "sequential": "loop",
    }

    def __init__(self) -> None:
        self.xp: ModuleType = np

    def __repr__(self) -> str:
        return f"Backend({self.name!r})"

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        # the namespace module cannot be pickled: a backend is rebuilt from its class
        return type(self), ()

    # -- models ----------------------------------------------------------------------------
    def bind(self, model: Any) -> Any:
        """``model`` computing on this backend (``model.on(self)``; a model without ``on``,
        e.g. a duck-typed one, is returned as it is)."""
        on = getattr(model, "on", None)
        return model if on is None else on(self)

    # -- arrays ----------------------------------------------------------------------------
    def asarray(self, x: Any, dtype: Any = None) -> Any:
        """``x`` on this backend's device."""
        return self.xp.asarray(x, dtype=dtype)

    def to_host(self, x: Any) -> np.ndarray:
        """``x`` as a NumPy array (a copy from a device, else a view)."""
        return to_numpy(x)

    # -- scans -----------------------------------------------------------------------------
    def scan_kernel(self, method: str) -> str:
        """The name of the kernel (:data:`pitsolve.kernels.KERNELS`) of a scan ``method``."""
        return self._scan_kernel(method)

    def _scan_kernel(self, method: str) -> str:
        if method not in SCAN_METHODS:
            raise ValueError(f"method must be one of {SCAN_METHODS}, got {method!r}")
        return self.scan_kernels[method]

    def scan(self, A: Any, b: Any, h0: Any, *, method: str = "blocked",
             chunk_size: int | None = None) -> Any:
        r"""States of :math:`h_t = A_t h_{t-1} + b_t` (see :func:`pitsolve.kernels.affine_scan`)."""
        return affine_scan(A, b, h0, kernel=self._scan_kernel(method), chunk_size=chunk_size)

    def scan_transpose(self, A: Any, g: Any, *, method: str = "blocked",
                       chunk_size: int | None = None) -> tuple[Any, Any]:
        r""":math:`\lambda_t = g_t + A_{t+1}^\top\lambda_{t+1}` and :math:`A_1^\top\lambda_1`
        (see :func:`pitsolve.kernels.affine_scan_transpose`)."""
        return affine_scan_transpose(A, g, kernel=self._scan_kernel(method),
                                     chunk_size=chunk_size)

    # -- the Newton iterations' reductions -------------------------------------------------
    def residual_norms(self, h: Any, f: Any, atol: float, rtol: float,
                       out: Any = None) -> tuple[np.ndarray, np.ndarray, int]:
        """``(max_t e, max_t q, first bad t)`` of the guess ``h`` with ``f = f(h_{t-1})`` (see
        :mod:`pitsolve.kernels.residual`), the norms as float64 NumPy arrays of the batch
        shape; ``out`` receives ``f - h``."""
        err, q, first = residual_norms_xp(h, f, atol, rtol, out)
        return self._host_norms(err), self._host_norms(q), first

    def _host_norms(self, x: Any) -> np.ndarray:
        return np.asarray(self.to_host(x), dtype=np.float64)

    def apply_step(self, h: Any, delta: Any) -> tuple[bool, float, float]:
        """``h += delta``; ``(all finite, max |delta|, max |h|)`` (see
        :mod:`pitsolve.kernels.update`)."""
        return apply_step_xp(h, delta)

    def step_size(self, new: Any, old: Any) -> tuple[bool, float, float]:
        """``(all finite, max |new - old|, max |new|)``."""
        return step_size_xp(new, old)

    def all_finite(self, x: Any) -> bool:
        """True if every entry of ``x`` is finite."""
        return all_finite_xp(x)

    def lm_smoother(self, F: Any, c: Any, lam: float, *, chunk_size: int | None = None,
                    slices: Any = None) -> Any:
        """The Levenberg–Marquardt step by a Kalman smoother (:mod:`pitsolve.kernels.kalman`),
        its means by this backend's scans; ``slices``: a
        :class:`~pitsolve.parallel.slices.TimeSlices` when the time axis is split over MPI
        ranks (the scans then run across them)."""

        def scan(A: Any, b: Any, h0: Any) -> Any:
            if slices is not None:
                return slices.scan(self, A, b, h0, chunk_size=chunk_size)
            return self.scan(A, b, h0, chunk_size=chunk_size)

        def scan_reverse(A: Any, g: Any) -> Any:
            if slices is not None:
                return slices.scan_transpose(self, A, g, chunk_size=chunk_size)[0]
            return self.scan_transpose(A, g, chunk_size=chunk_size)[0]

        return lm_smoother(F, c, lam, scan=scan, scan_reverse=scan_reverse,
                           compiled=self.compiled, slices=slices)

    # -- Krylov ----------------------------------------------------------------------------
    def gmres(self, matvec: Any, b: Any, *, psolve: Any = None, rtol: float,
              restart: int, maxiter: int, total: Any = None) -> KrylovResult:
        """GMRES (:func:`pitsolve.kernels.krylov.gmres`): ``maxiter`` inner iterations in all,
        on every backend; ``total`` sums inner products over the processes holding the other
        parts of the vectors (a time axis split over MPI ranks)."""
        return gmres(matvec, b, psolve=psolve, rtol=rtol, restart=restart, maxiter=maxiter,
                     total=total)
