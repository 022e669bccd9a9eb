r"""Execution engines: where the windows of a decomposition run, and how neighbours talk.

An engine runs the windows ``0 .. P-1`` of a :class:`~pitsolve.parallel.Partition` in
bulk-synchronous rounds. Within a round every process works on its own windows
(:meth:`Engine.map`); between rounds each window hands one message to a neighbour
(:meth:`Engine.shift`). Engines move data and reduce when asked; they never compute, so the
numbers of a decomposition do not depend on the engine that runs it.

``serial``
    every window in this process, one after another — the oracle the others are tested against.
``threads``
    every window in this process, run by a thread pool; the Numba kernels release the GIL.
``mpi``
    contiguous blocks of windows on the ranks of an MPI communicator (mpi4py). Messages between
    windows on different ranks use ``sendrecv`` with the neighbouring ranks only; the ends talk
    to ``MPI.PROC_NULL``. An exception on one rank prints that rank's traceback and aborts the
    whole job (``comm.Abort``) instead of leaving the other ranks waiting.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from .partition import Partition
from .slices import abort_on_error

__all__ = ["ENGINES", "Engine", "MPIEngine", "SerialEngine", "ThreadEngine", "make_engine"]

ENGINES = ("serial", "threads", "mpi")


class Engine:
    """Base of the engines; the serial engine's in-process behaviour.

    Attributes
    ----------
    name
        ``"serial"``, ``"threads"`` or ``"mpi"``.
    rank, size
        this process's index and the number of processes (1 and 0 in one process).
    """

    name = "serial"
    rank = 0
    size = 1

    def local(self, partition: Partition) -> range:
        """The windows this process runs."""
        return range(partition.P)

    def map(self, fn: Callable[[int], Any], windows: Sequence[int]) -> list[Any]:
        """``[fn(p) for p in windows]`` for this process's windows."""
        return [fn(p) for p in windows]

    def shift(
        self, outgoing: dict[int, Any], partition: Partition, direction: int = 1
    ) -> dict[int, Any]:
        """Hand window ``p``'s message to window ``p + direction``.

        ``outgoing`` maps each local window to its message (or None). Returns, for each local
        window ``p``, the message of window ``p - direction`` (None past the ends).
        """
        _check_direction(direction)
        return {
            p: outgoing.get(p - direction) if 0 <= p - direction < partition.P else None
            for p in self.local(partition)
        }

    def allreduce(self, value: Any, op: str = "sum") -> Any:
        """Reduce ``value`` over processes (``"sum"``, ``"max"``, ``"min"``)."""
        _check_op(op)
        return value

    def gather_time(self, parts: dict[int, Any], partition: Partition) -> Any:
        """Concatenate the owned parts ``(..., n_p, D)`` of all windows along time, everywhere."""
        return np.concatenate([parts[p] for p in range(partition.P)], axis=-2)

    def gather(self, value: Any) -> list[Any] | None:
        """Every process's ``value`` (any picklable object), as a list in rank order on rank 0;
        None on the other ranks."""
        return [value]

    def on_root(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` run on rank 0 only; its result, or its exception, on every rank (so that
        no rank waits for one that failed)."""
        return fn()

    @contextlib.contextmanager
    def guard(self) -> Iterator[None]:
        """Context in which an exception ends the whole job (a no-op in one process)."""
        yield

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class SerialEngine(Engine):
    """All windows in this process, one after another."""


class ThreadEngine(Engine):
    """All windows in this process on a pool of ``workers`` threads (default: CPU count)."""

    name = "threads"

    def __init__(self, workers: int | None = None):
        if workers is None:
            workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"workers must be a positive integer, got {workers!r}")
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None

    def map(self, fn: Callable[[int], Any], windows: Sequence[int]) -> list[Any]:
        if len(windows) <= 1 or self.workers == 1:
            return [fn(p) for p in windows]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="pitsolve")
        return list(self._pool.map(fn, windows))

    def __del__(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False)

    def __repr__(self) -> str:
        return f"ThreadEngine(workers={self.workers})"


class MPIEngine(Engine):
    """Blocks of windows on the ranks of an MPI communicator (default ``COMM_WORLD``).

    Launch the script on every rank (``mpiexec -n R python script.py``); every rank builds the
    same problem and calls :func:`pitsolve.solve`. Needs ``R ≤ P`` windows.
    """

    name = "mpi"

    def __init__(self, comm: Any = None):
        try:
            from mpi4py import MPI
        except ImportError as exc:  # pragma: no cover - mpi4py is a test dependency
            raise ImportError(
                "engine='mpi' needs mpi4py and an MPI library: pip install 'pitsolve[mpi]'"
            ) from exc
        self._MPI = MPI
        self.comm = MPI.COMM_WORLD if comm is None else comm
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()

    def local(self, partition: Partition) -> range:
        return partition.blocks(self.size)[self.rank]

    def _owner(self, p: int, partition: Partition) -> int:
        for r, block in enumerate(partition.blocks(self.size)):
            if p in block:
                return r
        raise AssertionError(p)  # pragma: no cover

    def shift(
        self, outgoing: dict[int, Any], partition: Partition, direction: int = 1
    ) -> dict[int, Any]:
        _check_direction(direction)
        mine = self.local(partition)
        incoming = {p: outgoing.get(p - direction) for p in mine}
        # the window at the sending edge of this block talks to the next rank in `direction`
        first, last = (mine[0], mine[-1]) if direction == 1 else (mine[-1], mine[0])
        null = self._MPI.PROC_NULL
        dest = self.rank + direction if 0 <= last + direction < partition.P else null
        source = self.rank - direction if 0 <= first - direction < partition.P else null
        received = self.comm.sendrecv(outgoing.get(last), dest=dest, source=source)
        incoming[first] = received if source != null else None
        return incoming

    def allreduce(self, value: Any, op: str = "sum") -> Any:
        _check_op(op)
        mpi_op = {"sum": self._MPI.SUM, "max": self._MPI.MAX, "min": self._MPI.MIN}[op]
        if isinstance(value, np.ndarray):
            out = np.empty_like(value)
            self.comm.Allreduce(np.ascontiguousarray(value), out, op=mpi_op)
            return out
        return self.comm.allreduce(value, op=mpi_op)

    def gather(self, value: Any) -> list[Any] | None:
        return self.comm.gather(value, root=0)

    def on_root(self, fn: Callable[[], Any]) -> Any:
        result = error = None
        if self.rank == 0:
            try:
                result = fn()
            except Exception as exc:  # raised on every rank below, so that no rank waits
                error = exc
        result, error = self.comm.bcast((result, error), root=0)
        if error is not None:
            raise error
        return result

    def gather_time(self, parts: dict[int, Any], partition: Partition) -> Any:
        mine = self.local(partition)
        first = parts[mine[0]]
        # time-major, so that every rank's rows are one contiguous piece of the result
        shape = (partition.T, *first.shape[:-2], first.shape[-1])
        recv = np.empty(shape, dtype=first.dtype)
        row = int(np.prod(shape[1:], dtype=np.int64))
        counts, displs = [], []
        for r, b in enumerate(partition.blocks(self.size)):
            start, stop = partition.bounds[b[0]], partition.bounds[b[-1] + 1]
            counts.append((stop - start) * row)
            displs.append(start * row)
            if r != self.rank:
                # touch the pages the other ranks will fill: MPI copies into memory not yet
                # faulted in were 3-6x slower (2.4 MB: 2 ms instead of 0.35 ms on 2 cores)
                recv[start:stop] = 0
        for p in mine:
            recv[partition.bounds[p] : partition.bounds[p + 1]] = np.moveaxis(parts[p], -2, 0)
        self.comm.Allgatherv(self._MPI.IN_PLACE, [recv, (counts, displs)])
        return np.moveaxis(recv, 0, -2)

    def guard(self) -> contextlib.AbstractContextManager[None]:
        return abort_on_error(self.comm)

    def __repr__(self) -> str:
        return f"MPIEngine(rank={self.rank}, size={self.size})"


def make_engine(engine: str | Engine, *, workers: int | None = None, comm: Any = None) -> Engine:
    """An engine from its name (``"serial"``, ``"threads"``, ``"mpi"``) or an instance."""
    if isinstance(engine, Engine):
        return engine
    if engine == "serial":
        return SerialEngine()
    if engine == "threads":
        return ThreadEngine(workers)
    if engine == "mpi":
        return MPIEngine(comm)
    raise ValueError(f"engine must be one of {ENGINES} or an Engine, got {engine!r}")


def _check_direction(direction: int) -> None:
    if direction not in (1, -1):
        raise ValueError(f"direction must be +1 or -1, got {direction!r}")


def _check_op(op: str) -> None:
    if op not in ("sum", "max", "min"):
        raise ValueError(f"op must be 'sum', 'max' or 'min', got {op!r}")
