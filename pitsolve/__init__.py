"""pitsolve: solve and train nonlinear recurrences in parallel over time.

    import pitsolve as ps
    sol = ps.solve(ps.LinearRecurrenceProblem(A, b, h0), ps.ParallelScan())
"""

from . import adjoint, backends, dsr, kernels, models, parallel, training
from .algorithms import (
    DEER,
    LevenbergMarquardt,
    LineSearch,
    NewtonKrylov,
    ParallelScan,
    Schwarz,
    Sequential,
)
from .memory import tune_allocator
from .problems import LinearRecurrenceProblem, RecurrenceProblem
from .solution import ReturnCode, Solution, SolverError, Stats, is_successful
from .solve import Algorithm, Controls, finalize, init, solve, step
from .training import GTF, STF, FitResult, NoForcing, fit, loss_and_grad, optim

__version__ = "0.1.0"

__all__ = [
    "DEER",
    "GTF",
    "STF",
    "Algorithm",
    "Controls",
    "FitResult",
    "LevenbergMarquardt",
    "LineSearch",
    "LinearRecurrenceProblem",
    "NewtonKrylov",
    "NoForcing",
    "ParallelScan",
    "RecurrenceProblem",
    "ReturnCode",
    "Schwarz",
    "Sequential",
    "Solution",
    "SolverError",
    "Stats",
    "adjoint",
    "backends",
    "dsr",
    "finalize",
    "fit",
    "init",
    "is_successful",
    "kernels",
    "loss_and_grad",
    "models",
    "optim",
    "parallel",
    "solve",
    "step",
    "training",
    "tune_allocator",
]
