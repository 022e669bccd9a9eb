r"""The time axis split over the ranks of a communicator: what the ranks exchange.

Rank r holds the contiguous steps :math:`[s_r, s_{r+1})` of a series (rank order is time
order) and never the rest. A solver over such a slice talks to the other ranks only through a
:class:`TimeSlices`, in messages whose size does not grow with T:

- the **halo**: :math:`h_{s_r - 1}`, the last state of the rank before (rank 0: :math:`h_0`),
  which the first local step :math:`f(h_{s_r-1}, x_{s_r})` needs;
- **reductions** over the ranks of per-batch-element figures (max of residual norms, sums of
  merits and of parameter cotangents, "all finite");
- the **converged prefix**: steps are frozen only where every step before them, on every rank,
  has converged;
- the **pipeline** of a sequential pass: receive the carry from the rank before, send the last
  state to the rank after;
- the **affine scan across ranks** (:mod:`pitsolve.kernels.distributed`).

``TimeSlices(None)`` is the one-process case: every method returns its local argument, so a
solver has one code path. Every method of a distributed instance is collective: all ranks
call it, in the same order.
"""

from __future__ import annotations

import contextlib
import sys
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from .._arrays import to_numpy
from ..kernels.distributed import previous_state, scan_distributed, scan_transpose_distributed

__all__ = ["TimeSlices", "abort_on_error", "collective_check", "even_rows"]


@contextlib.contextmanager
def abort_on_error(comm: Any) -> Iterator[None]:
    """Context in which an exception on one rank prints that rank's traceback and ends the
    whole job (``comm.Abort(1)``) instead of leaving the other ranks waiting in a collective;
    a no-op without ``comm`` or with one rank."""
    if comm is None or comm.Get_size() == 1:
        yield
        return
    try:
        yield
    except BaseException as exc:
        rank, size = comm.Get_rank(), comm.Get_size()
        lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
        sys.stderr.write(f"pitsolve: MPI rank {rank} of {size} failed; aborting the job.\n"
                         + "".join(lines))
        sys.stderr.flush()
        comm.Abort(1)
        raise  # (Abort does not return; should it, the error is not swallowed)


def collective_check(comm: Any, check: Callable[[], Any]) -> Any:
    """``check()`` on every rank; if it raised ``ValueError`` or ``TypeError`` on any rank,
    the same exception (naming the ranks) on every rank, so that no rank waits in a
    collective for one that failed. Returns ``check()``'s result."""
    if comm is None:
        return check()
    result, error = None, None
    try:
        result = check()
    except (ValueError, TypeError) as exc:
        error = (type(exc).__name__, str(exc))
    errors = comm.allgather(error)
    bad = [(r, e) for r, e in enumerate(errors) if e is not None]
    if bad:
        kind = TypeError if all(e[0] == "TypeError" for _, e in bad) else ValueError
        ranks: dict[str, list[int]] = {}
        for r, e in bad:
            ranks.setdefault(e[1], []).append(r)
        raise kind("; ".join(f"{_ranks(rs, len(errors))}: {msg}" for msg, rs in ranks.items()))
    return result


def _ranks(ranks: list[int], size: int) -> str:
    if len(ranks) == size > 1:
        return "on every rank"
    return f"rank {ranks[0]}" if len(ranks) == 1 else f"ranks {ranks}"


def even_rows(T: int, size: int, rank: int) -> tuple[int, int]:
    """``(start, stop)`` of rank ``rank`` when T steps are split as evenly as possible over
    ``size`` ranks (the first ``T % size`` ranks one step more)."""
    if T < size:
        raise ValueError(f"T={T} steps cannot be split over {size} ranks: every rank needs "
                         "at least one step")
    q, m = divmod(T, size)
    start = rank * q + min(rank, m)
    return start, start + q + (rank < m)


class TimeSlices:
    """What the ranks of ``comm`` exchange when each holds a slice of the time axis (see the
    module docstring); ``comm=None``: one process, every method local."""

    def __init__(self, comm: Any = None):
        self.comm = comm
        self.rank = 0 if comm is None else comm.Get_rank()
        self.size = 1 if comm is None else comm.Get_size()

    @property
    def split(self) -> bool:
        """True if the time axis is split over more than one process."""
        return self.comm is not None

    def halo(self, last: Any, first: Any) -> Any:
        """The rank before's ``last`` (rank 0: ``first``); ``last`` ``(..., D)`` is this
        rank's last state. One ``sendrecv`` with each neighbour."""
        if self.comm is None:
            return first
        from mpi4py import MPI

        dest = self.rank + 1 if self.rank + 1 < self.size else MPI.PROC_NULL
        source = self.rank - 1 if self.rank > 0 else MPI.PROC_NULL
        got = self.comm.sendrecv(last, dest=dest, source=source)
        return first if self.rank == 0 else got

    def halo_back(self, first: Any, last: Any) -> Any:
        """The rank after's ``first`` (the last rank: ``last``): :meth:`halo` in reverse time,
        for transposed operators. One ``sendrecv`` with each neighbour."""
        if self.comm is None:
            return last
        from mpi4py import MPI

        dest = self.rank - 1 if self.rank > 0 else MPI.PROC_NULL
        source = self.rank + 1 if self.rank + 1 < self.size else MPI.PROC_NULL
        got = self.comm.sendrecv(first, dest=dest, source=source)
        return last if self.rank + 1 == self.size else got

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value`` in rank order (``[value]`` in one process)."""
        return [value] if self.comm is None else self.comm.allgather(value)

    def rows(self, n: int) -> tuple[int, int]:
        """``(start, total)``: where this rank's ``n`` steps begin on the whole time axis, and
        the steps of all ranks."""
        if self.comm is None:
            return 0, n
        counts = self.comm.allgather(int(n))
        return sum(counts[: self.rank]), sum(counts)

    def max(self, x: np.ndarray) -> np.ndarray:
        """The elementwise maximum over the ranks of a host array (NaN counts as +inf)."""
        x = np.where(np.isnan(x), np.inf, x)
        return x if self.comm is None else np.max(self.comm.allgather(x), axis=0)

    def sum(self, x: Any) -> Any:
        """The sum over the ranks of an array (host or device), in rank order so that every
        rank gets the same bits."""
        if self.comm is None:
            return x
        parts = self.comm.allgather(to_numpy(x))
        total = np.array(parts[0])
        for p in parts[1:]:
            total = total + p
        if np.isscalar(x):
            return type(x)(total)
        xp = sys.modules["cupy"] if type(x).__module__.startswith("cupy") else np
        return xp.asarray(total)

    def all(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on every rank."""
        return bool(flag) if self.comm is None else all(self.comm.allgather(bool(flag)))

    def any(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on some rank."""
        return bool(flag) if self.comm is None else any(self.comm.allgather(bool(flag)))

    def test(self, err: np.ndarray, q: np.ndarray, first: int,
             n: int) -> tuple[np.ndarray, np.ndarray, int]:
        """The residual test over the ranks in one collective: the norms' maxima over the
        ranks, and how many leading steps of this rank's active segment (``n`` steps, the
        first ``first`` converged) lie in the converged prefix of the whole time axis (all of
        the segment converged on every rank before this one)."""
        err = np.where(np.isnan(err), np.inf, err)
        q = np.where(np.isnan(q), np.inf, q)
        if self.comm is None:
            return err, q, first
        parts = self.comm.allgather((err, q, first, n))
        err = np.max([p[0] for p in parts], axis=0)
        q = np.max([p[1] for p in parts], axis=0)
        before = all(p[2] >= p[3] for p in parts[: self.rank])
        return err, q, (first if before else 0)

    def step(self, finite: bool, step: float, size: float, last: Any,
             first: Any) -> tuple[bool, float, float, Any]:
        """The figures of a step over the ranks (all finite, largest step, largest state) and
        the halo of the new iterate (:meth:`halo` of ``last``, ``first`` on rank 0), in one
        collective."""
        if self.comm is None:
            return finite, step, size, first
        parts = self.comm.allgather((bool(finite), float(step), float(size),
                                     None if self.rank + 1 == self.size else last))
        halo = first if self.rank == 0 else parts[self.rank - 1][3]
        return (all(p[0] for p in parts), max(p[1] for p in parts), max(p[2] for p in parts),
                halo)

    def scan(self, backend: Any, A: Any, b: Any, h0: Any, *, method: str = "blocked",
             chunk_size: int | None = None) -> Any:
        r"""This rank's states of :math:`h_t = A_t h_{t-1} + b_t` on ``backend``'s kernels
        (``h0`` rank 0's), across the ranks by one ``allgather`` of affine summaries
        (:func:`~pitsolve.kernels.distributed.scan_distributed`); an empty slice passes its
        carry on."""
        if self.comm is None:
            return backend.scan(A, b, h0, method=method, chunk_size=chunk_size)
        return scan_distributed(A, b, h0, self.comm, kernel=backend.scan_kernel(method),
                                chunk_size=chunk_size, allow_empty=True)

    def scan_transpose(self, backend: Any, A: Any, g: Any, *, method: str = "blocked",
                       chunk_size: int | None = None) -> tuple[Any, Any]:
        r"""This rank's :math:`\lambda_t = g_t + A_{t+1}^\top\lambda_{t+1}` and the cotangent
        of :math:`h_0`, :math:`A_1^\top\lambda_1` (zeros on the ranks after the first, so that
        the sum over ranks is the cotangent); an empty slice passes the cotangent on."""
        if self.comm is None:
            return backend.scan_transpose(A, g, method=method, chunk_size=chunk_size)
        lam, out = scan_transpose_distributed(A, g, self.comm,
                                              kernel=backend.scan_kernel(method),
                                              chunk_size=chunk_size, allow_empty=True)
        zero = backend.xp.zeros((*g.shape[:-2], g.shape[-1]), dtype=g.dtype)
        return lam, zero if out is None else out

    def before(self, states: Any, h0: Any) -> Any:
        """The state before this rank's slice of ``states``: the rank before's last (rank 0,
        or one process: ``h0``)."""
        return h0 if self.comm is None else previous_state(states, h0, self.comm)

    def receive(self, first: Any) -> Any:
        """The carry of a pipelined pass: the rank before's last state, sent by :meth:`send`
        (rank 0: ``first``); blocks until it arrives."""
        if self.comm is None or self.rank == 0:
            return first
        return self.comm.recv(source=self.rank - 1, tag=71)

    def send(self, last: Any) -> None:
        """Pass this rank's last state on to the rank after (nothing on the last rank)."""
        if self.comm is not None and self.rank + 1 < self.size:
            self.comm.send(last, dest=self.rank + 1, tag=71)

    def __repr__(self) -> str:
        return "TimeSlices(one process)" if self.comm is None else \
            f"TimeSlices(rank {self.rank} of {self.size})"
