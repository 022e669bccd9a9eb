"""Built-in models with hand-derived derivatives, and the protocol users implement.

Every built-in model passes :func:`pitsolve.testing.check_derivatives`; see the docs page
"Writing your own model" for the protocol.
"""

from .base import Model, Params
from .ode import Lorenz63, ODEStep, VectorField
from .plrnn import ALRNN, ClippedShPLRNN, ShPLRNN
from .rnn import GRU, Elman
from .ssm import LinearSSM

__all__ = [
    "ALRNN",
    "GRU",
    "ClippedShPLRNN",
    "Elman",
    "LinearSSM",
    "Lorenz63",
    "Model",
    "ODEStep",
    "Params",
    "ShPLRNN",
    "VectorField",
]
