"""Solvers of :class:`~pitsolve.LinearRecurrenceProblem`: one scan, sequential or parallel."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from ..adjoint import ScanAdjoint
from ..backends import BACKENDS
from ..parallel.slices import TimeSlices
from ..problems import LinearRecurrenceProblem
from ..solution import ReturnCode
from ..solve import Algorithm, Controls, SolverState, register
from ._memory import call_with_peak, kind_of_call, time_chunks
from .sequential import Sequential

__all__ = ["ParallelScan"]

_BACKENDS = ("auto", *BACKENDS)
_METHODS = ("blocked", "logdepth")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ParallelScan(Algorithm):
    r"""Parallel scan of the affine maps :math:`(A_t, b_t)`, composed associatively as
    :math:`(A_2, b_2) \circ (A_1, b_1) = (A_2 A_1, A_2 b_1 + b_2)`.

    Parameters
    ----------
    backend
        ``"auto"`` (Numba on NumPy arrays, CuPy on CuPy arrays), ``"numba"``,
        ``"numpy"`` or ``"cupy"``.
    method
        ``"blocked"`` — three-phase chunked scan, work ≈ 2× sequential (diagonal),
        depth O(T/C + C) — or ``"logdepth"`` — Hillis–Steele, work O(T log T), depth O(log T).
        The Numba backend implements ``"blocked"``; ``"logdepth"`` runs on the array namespace.
    chunk_size
        steps per chunk of the blocked scan; ``None`` picks one from T, the batch size
        and the number of threads.
    """

    backend: str = "auto"
    method: str = "blocked"
    chunk_size: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {self.backend!r}")
        if self.method not in _METHODS:
            raise ValueError(f"method must be one of {_METHODS}, got {self.method!r}")
        if self.chunk_size is not None and (
            isinstance(self.chunk_size, bool)
            or not isinstance(self.chunk_size, int)
            or self.chunk_size < 1
        ):
            raise ValueError(f"chunk_size must be None or an integer ≥ 1, got {self.chunk_size!r}")


class LinearSolve(SolverState):
    """A single scan on the solve's backend (``Sequential``: the backend's sequential loop);
    done after one step. With ``out=`` (in one process) the scan runs in chunks of the time
    axis (``OUT_CHUNK_BYTES`` of states), each from the last state of the one before, written
    into ``out`` as they come; on a split time axis the states are copied into ``out``."""

    writes_out = True

    def __init__(self, problem: LinearRecurrenceProblem, algorithm: Algorithm, controls: Controls):
        super().__init__(problem, algorithm, controls)
        parallel = isinstance(algorithm, ParallelScan)
        self.method = algorithm.method if parallel else "sequential"
        self.chunk_size = algorithm.chunk_size if parallel else None
        self.adjoint = ScanAdjoint(method=self.method, chunk_size=self.chunk_size)

    def step(self) -> None:
        p = self.problem
        B = int(np.prod(p.batch_shape, dtype=np.int64))
        key = kind_of_call(f"scan:{self.method}", p, self.backend)
        if self.out is None or p.comm is not None:
            self.states, nbytes = call_with_peak(key, p.T * B, self._scan)
            finite = bool(self.xp.isfinite(self.states).all())
            if self.out is not None:
                self.out[...] = self.states
                self.states = self.out
        else:
            self.states, nbytes, finite = self.out, 0, True
            h, time_axis = p.h0, p.b.ndim - 2
            for a, b in time_chunks(p.T, B * p.D * np.dtype(p.dtype).itemsize):
                A = p.A[(slice(None),) * time_axis + (slice(a, b),)]
                part, used = call_with_peak(key, (b - a) * B, functools.partial(
                    self.backend.scan, A, p.b[..., a:b, :], h, method=self.method,
                    chunk_size=self.chunk_size))
                self.states[..., a:b, :] = part
                h, nbytes = part[..., -1, :], max(nbytes, used)
                finite = finite and self.backend.all_finite(part)
        self.stats.scans += 1
        self.stats.peak_bytes = int(nbytes)
        # every rank returns the same return code
        finite = TimeSlices(p.comm).all(finite)
        self.retcode = ReturnCode.Success if finite else ReturnCode.NonFinite
        self.done = True

    def _scan(self):  # type: ignore[no-untyped-def]
        p = self.problem
        return TimeSlices(p.comm).scan(self.backend, p.A, p.b, p.h0, method=self.method,
                                       chunk_size=self.chunk_size)


register(LinearRecurrenceProblem, ParallelScan)(LinearSolve)
register(LinearRecurrenceProblem, Sequential)(LinearSolve)
