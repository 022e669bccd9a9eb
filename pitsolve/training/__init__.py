"""Training: forcing (GTF, aGTF, STF), observation models, losses, optimisers, fit,
checkpoints."""

from . import optim
from .checkpoint import load_checkpoint, load_model, save_checkpoint, save_model
from .fit import FitResult, fit
from .forcing import GTF, STF, ForcedModel, ForcedPredictionModel, NoForcing, estimate_alpha
from .losses import Regularization, loss_and_grad
from .observation import Affine, Identity, ObservationModel, ObservedModel

__all__ = [
    "GTF",
    "STF",
    "Affine",
    "FitResult",
    "ForcedModel",
    "ForcedPredictionModel",
    "Identity",
    "NoForcing",
    "ObservationModel",
    "ObservedModel",
    "Regularization",
    "estimate_alpha",
    "fit",
    "load_checkpoint",
    "load_model",
    "loss_and_grad",
    "optim",
    "save_checkpoint",
    "save_model",
]
