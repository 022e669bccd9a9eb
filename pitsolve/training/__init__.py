"""Training: forcing schedules (GTF, aGTF, STF), losses, objectives, the epoch loop, optimisers,
checkpoints.

The forced recurrence and the observation models are models (:mod:`pitsolve.models`); their
old names here (``ForcedModel``, ``ObservedModel``, ``Identity``, ``Affine``, ...) work for
one release with a :class:`DeprecationWarning`.
"""

import warnings
from typing import Any

from .. import models as _models
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

_MOVED = ("Affine", "ForcedModel", "ForcedPredictionModel", "Identity", "ObservationModel",
          "ObservedModel")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        warnings.warn(f"pitsolve.training.{name} moved to pitsolve.models.{name}",
                      DeprecationWarning, stacklevel=2)
        return getattr(_models, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
