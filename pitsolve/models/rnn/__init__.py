"""Classic recurrent networks with hand-derived derivatives: Elman and GRU."""

from .elman import Elman, ElmanLinearization
from .gru import GRU

__all__ = ["GRU", "Elman", "ElmanLinearization"]
