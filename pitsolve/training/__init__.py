"""Training: forcing schedules (GTF, aGTF, STF), losses, objectives, the epoch loop, optimisers,
checkpoints.

The forced recurrence and the observation models are models (:mod:`pitsolve.models`); their
old names here (``ForcedModel``, ``ObservedModel``, ``Identity``, ``Affine``, ...) work for
one release with a :class:`DeprecationWarning`.
"""

from .._deprecation import moved
from . import optim
from .checkpoint import load_checkpoint, load_model, save_checkpoint, save_model
from .fit import FitResult, fit
from .forcing import GTF, STF, NoForcing, estimate_alpha
from .local import LocalTraining
from .losses import Regularization, loss_and_grad
from .objectives import GlobalObjective, LocalObjective

__all__ = [
    "GTF",
    "STF",
    "FitResult",
    "GlobalObjective",
    "LocalObjective",
    "LocalTraining",
    "NoForcing",
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

__getattr__ = moved(__name__, "pitsolve.models", ("Affine", "ForcedModel",
                                                  "ForcedPredictionModel", "Identity",
                                                  "ObservationModel", "ObservedModel"))
