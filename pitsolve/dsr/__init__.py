"""Dynamical systems reconstruction: benchmark systems, measures, evaluation."""

from .embedding import delay_embed
from .evaluate import Evaluation, evaluate, generate, summarize, validation_score
from .io import load_series, save_series
from .lyapunov import LyapunovResult, max_lyapunov, max_lyapunov_flow
from .metrics import power_spectrum_distance, prediction_error, state_space_divergence
from .recipes import RECIPES, Recipe, recipe
from .systems import (
    SYSTEMS,
    chen,
    dysts_system,
    from_dysts,
    halvorsen,
    lorenz63,
    lorenz63_drift,
    lorenz96,
    rossler,
    sprott_b,
    system,
    thomas,
)

__all__ = [
    "RECIPES",
    "SYSTEMS",
    "Evaluation",
    "LyapunovResult",
    "Recipe",
    "chen",
    "delay_embed",
    "dysts_system",
    "evaluate",
    "from_dysts",
    "generate",
    "halvorsen",
    "load_series",
    "lorenz63",
    "lorenz63_drift",
    "lorenz96",
    "max_lyapunov",
    "max_lyapunov_flow",
    "power_spectrum_distance",
    "prediction_error",
    "recipe",
    "rossler",
    "save_series",
    "sprott_b",
    "state_space_divergence",
    "summarize",
    "system",
    "thomas",
    "validation_score",
]
