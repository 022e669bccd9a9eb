"""Built-in models with hand-derived derivatives, and the protocol users implement.

Every built-in model passes :func:`pitsolve.testing.check_derivatives`; see the docs page
"Writing your own model" for the protocol. Besides the recurrences themselves this package
holds the models built from other models: the teacher-forced recurrence of a model
(:class:`ForcedModel`, :class:`ForcedPredictionModel`) and a latent model with an
observation model (:class:`ObservedModel` with :class:`Identity` or :class:`Affine`).
"""

from collections.abc import Mapping
from typing import Any

from .base import Model, Params
from .forced import ForcedModel, ForcedPredictionModel
from .observed import PREFIX, Affine, Identity, ObservationModel, ObservedModel, split_observed
from .ode import Lorenz63, ODEStep, VectorField
from .plrnn import ALRNN, ClippedShPLRNN, ShPLRNN
from .rnn import GRU, Elman
from .ssm import LinearSSM

__all__ = [
    "ALRNN",
    "GRU",
    "Affine",
    "ClippedShPLRNN",
    "Elman",
    "ForcedModel",
    "ForcedPredictionModel",
    "Identity",
    "LinearSSM",
    "Lorenz63",
    "Model",
    "ODEStep",
    "ObservationModel",
    "ObservedModel",
    "Params",
    "ShPLRNN",
    "VectorField",
    "from_config",
    "split_observed",
]

#: The models :func:`from_config` rebuilds, by class name.
MODELS: dict[str, type] = {
    cls.__name__: cls for cls in (ShPLRNN, ClippedShPLRNN, ALRNN, Elman, GRU, LinearSSM)
}
#: The observation models :func:`from_config` rebuilds, by class name.
OBSERVATIONS: dict[str, type] = {cls.__name__: cls for cls in (Identity, Affine)}


def from_config(name: str, config: Mapping[str, Any], params: Mapping[str, Any]) -> Any:
    """The model of class ``name`` with keywords ``config`` (:meth:`Model.config`) and
    parameters ``params``: how checkpoints rebuild a model. An :class:`ObservedModel`'s
    ``config`` holds its parts' names and configurations; its ``params`` are all of them
    (the observation's prefixed ``obs.``).

    Raises
    ------
    ValueError
        For a name that is not a built-in model.
    """
    if name == "ObservedModel":
        latent, obs = config["latent"], config["observation"]
        latent_params = {k: v for k, v in params.items() if not k.startswith(PREFIX)}
        obs_params = {k[len(PREFIX):]: v for k, v in params.items() if k.startswith(PREFIX)}
        if obs["model"] not in OBSERVATIONS:
            raise ValueError(f"unknown observation model {obs['model']!r}; the built-in ones "
                             f"are {sorted(OBSERVATIONS)}")
        observation = OBSERVATIONS[obs["model"]].from_config(
            {k: v for k, v in obs.items() if k != "model"}, obs_params)
        model = from_config(latent["model"], {k: v for k, v in latent.items() if k != "model"},
                            latent_params)
        return ObservedModel(model, observation)
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; from_config rebuilds {sorted(MODELS)} "
                         "and ObservedModel")
    return MODELS[name].from_config(config, params)
