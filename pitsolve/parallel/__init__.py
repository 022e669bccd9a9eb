"""Execution engines for the windows of a decomposition in time: serial, threads, MPI.

Below the models and algorithms: engines move data between neighbouring windows and reduce
when asked; they never compute.
"""

from .engines import ENGINES, Engine, MPIEngine, SerialEngine, ThreadEngine, make_engine
from .partition import Partition

__all__ = [
    "ENGINES",
    "Engine",
    "MPIEngine",
    "Partition",
    "SerialEngine",
    "ThreadEngine",
    "make_engine",
]
