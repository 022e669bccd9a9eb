"""Training: forcing (GTF, aGTF, STF), losses, optimisers, fit, checkpoints."""

from . import optim
from .checkpoint import load_checkpoint, save_checkpoint
from .fit import FitResult, fit
from .forcing import GTF, STF, ForcedModel, NoForcing, estimate_alpha
from .losses import loss_and_grad

__all__ = [
    "GTF",
    "STF",
    "FitResult",
    "ForcedModel",
    "NoForcing",
    "estimate_alpha",
    "fit",
    "load_checkpoint",
    "loss_and_grad",
    "optim",
    "save_checkpoint",
]
