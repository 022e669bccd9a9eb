"""Execution engines for the windows of a decomposition in time (serial, threads, MPI), and
what the ranks exchange when the time axis itself is split over them (:mod:`.slices`).

Below the models and algorithms: engines move data between neighbouring windows and reduce
when asked; they never compute.
"""

from .devices import local_rank, use_local_device
from .engines import ENGINES, Engine, MPIEngine, SerialEngine, ThreadEngine, make_engine
from .partition import Partition
from .slices import TimeSlices, abort_on_error, collective_check, even_rows

__all__ = [
    "ENGINES",
    "Engine",
    "MPIEngine",
    "Partition",
    "SerialEngine",
    "ThreadEngine",
    "TimeSlices",
    "abort_on_error",
    "collective_check",
    "even_rows",
    "local_rank",
    "make_engine",
    "use_local_device",
]
