"""Deprecated: the observation models moved to :mod:`pitsolve.models` (``Identity``,
``Affine``, ``ObservationModel``, ``ObservedModel``, ``split_observed``); the old spellings
work for one release with a :class:`DeprecationWarning`."""

from .._deprecation import moved

__getattr__ = moved(__name__, "pitsolve.models", ("PREFIX", "Affine", "Identity",
                                                  "ObservationModel", "ObservedModel",
                                                  "split_observed"))
