"""Execution engines for the windows of a decomposition in time: serial, threads, MPI.

Below the models and algorithms: engines move data between neighbouring windows and reduce
when asked; they never compute.
"""

from .devices import local_rank, use_local_device
from .engines import ENGINES, Engine, MPIEngine, SerialEngine, ThreadEngine, make_engine
from .partition import Partition

__all__ = [
    "ENGINES",
    "Engine",
    "MPIEngine",
    "Partition",
    "SerialEngine",
    "ThreadEngine",
    "local_rank",
    "make_engine",
    "use_local_device",
]
