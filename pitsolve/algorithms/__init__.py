"""Algorithms: method options (frozen dataclasses) and the solvers registered for them."""

from .deer import DEER, LevenbergMarquardt, LineSearch
from .linear import ParallelScan
from .newton_krylov import NewtonKrylov
from .schwarz import Schwarz
from .sequential import Sequential

__all__ = [
    "DEER",
    "LevenbergMarquardt",
    "LineSearch",
    "NewtonKrylov",
    "ParallelScan",
    "Schwarz",
    "Sequential",
]
