"""Built-in models with hand-derived derivatives, and the protocol users implement."""

from .base import Model, Params

__all__ = ["Model", "Params"]
