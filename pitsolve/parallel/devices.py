"""One GPU per MPI rank: the device of a rank is its rank among the ranks of its node.

Call :func:`use_local_device` at the start of an MPI program, before any CuPy array exists::

    import pitsolve as ps
    ps.parallel.use_local_device()      # rank r of its node -> device r mod (devices per node)
    h0 = cupy.asarray(...)              # now on this rank's device

Ranks of one node are found with ``MPI_Comm_split_type(MPI_COMM_TYPE_SHARED)``; with more ranks
than devices on a node, devices are shared round-robin. The threads engine, in one process,
shares the process's current device.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["local_rank", "use_local_device"]


def local_rank(comm: Any = None) -> tuple[int, int]:
    """``(rank, size)`` of this process among the ranks of ``comm`` (default ``COMM_WORLD``)
    on its node."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD if comm is None else comm
    node = comm.Split_type(MPI.COMM_TYPE_SHARED, key=comm.Get_rank())
    try:
        return node.Get_rank(), node.Get_size()
    finally:
        node.Free()


def use_local_device(comm: Any = None, *, cupy: Any = None) -> int:
    """Make device ``local rank mod devices`` CuPy's current device; returns its id.

    Raises
    ------
    RuntimeError
        If CuPy finds no CUDA device.
    """
    cp = importlib.import_module("cupy") if cupy is None else cupy
    count = int(cp.cuda.runtime.getDeviceCount())
    if count < 1:
        raise RuntimeError("use_local_device: CuPy finds no CUDA device on this node")
    device = local_rank(comm)[0] % count
    cp.cuda.Device(device).use()
    return device
