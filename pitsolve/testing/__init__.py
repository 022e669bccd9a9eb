"""Public test helpers: derivative checks for any model, and the standard benchmark problems.

``check_derivatives(model)`` compares every hand-derived derivative of a model with central
finite differences; :mod:`pitsolve.testing.problems` builds the problems of ``BENCHMARKS.md``.
"""

from . import problems
from .derivatives import DerivativeCheck, DerivativeReport, check_derivatives

__all__ = ["DerivativeCheck", "DerivativeReport", "check_derivatives", "problems"]
