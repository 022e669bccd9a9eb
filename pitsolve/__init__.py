"""pitsolve: solve and train nonlinear recurrences in parallel over time.

    import pitsolve as ps
    sol = ps.solve(ps.LinearRecurrenceProblem(A, b, h0), ps.ParallelScan())
"""

from . import adjoint as _adjoint  # noqa: F401  (registers the adjoint rules)
from . import kernels, models
from .algorithms import (
    DEER,
    LevenbergMarquardt,
    LineSearch,
    NewtonKrylov,
    ParallelScan,
    Sequential,
)
from .problems import LinearRecurrenceProblem, RecurrenceProblem
from .solution import ReturnCode, Solution, SolverError, Stats, is_successful
from .solve import Algorithm, Controls, finalize, init, solve, step

__version__ = "0.1.0"

__all__ = [
    "DEER",
    "Algorithm",
    "Controls",
    "LevenbergMarquardt",
    "LineSearch",
    "LinearRecurrenceProblem",
    "NewtonKrylov",
    "ParallelScan",
    "RecurrenceProblem",
    "ReturnCode",
    "Sequential",
    "Solution",
    "SolverError",
    "Stats",
    "finalize",
    "init",
    "is_successful",
    "kernels",
    "models",
    "solve",
    "step",
]
