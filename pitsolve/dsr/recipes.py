"""Training recipes: the settings ``pitsolve reconstruct`` uses for each system.

A :class:`Recipe` holds what the command line would otherwise take from its flags — model,
sizes, training length, optimiser steps, windows, learning rate and forcing — together with
the system's parameters where the recipe fixes them (Lorenz-96 with N = 20 sites) and a
free-text ``source`` saying where the values come from. ``pitsolve reconstruct SYSTEM`` fills
every flag the user did not give from ``recipe(SYSTEM)``; an explicit flag always wins.

:data:`RECIPES` has an entry for every built-in system of :data:`~pitsolve.dsr.systems.SYSTEMS`;
:func:`recipe` falls back to :data:`GENERIC` for ``dysts:NAME`` systems and data files.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from .systems import SYSTEMS

__all__ = ["GENERIC", "RECIPES", "TRAINING_FIELDS", "Recipe", "recipe"]

_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The training settings of one system (the defaults of ``pitsolve reconstruct``).

    Attributes
    ----------
    model : ``"shplrnn"``, ``"clipped"`` or ``"alrnn"`` (``--model``).
    latent : latent units M (``--latent``); None: the data dimension N.
    hidden : hidden units L (``--hidden``).
    T : training length of a generated series (``--T``).
    epochs, steps_per_epoch : ``--epochs`` × ``--steps-per-epoch`` optimiser steps.
    seq_len, batch_size : windows per step and their length (``--seq-len``, ``--batch-size``).
    lr : initial learning rate (``--lr``; it decays to lr/100 over all steps).
    forcing : the ``--forcing`` spec: ``agtf[:GAMMA]``, ``gtf:ALPHA``, ``stf:TAU`` or ``none``.
    source : where the values come from (measured, published, or a placeholder).
    system_params : parameters passed to the system's generator (empty: its defaults).
    lyapunov_max : the reference λ_max per time unit at ``system_params`` when they differ
        from the system's defaults (None: the system's own reference).
    """

    model: str = "shplrnn"
    latent: int | None = None
    hidden: int = 50
    T: int = 100_000
    epochs: int = 60
    steps_per_epoch: int = 500
    seq_len: int = 200
    batch_size: int = 16
    lr: float = 1e-3
    forcing: str = "agtf"
    source: str = ""
    system_params: Mapping[str, Any] = dataclasses.field(
        default_factory=lambda: _EMPTY, hash=False)
    lyapunov_max: float | None = None

    def training(self) -> dict[str, Any]:
        """The settings that have a ``pitsolve reconstruct`` flag, by the flag's dest name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name in TRAINING_FIELDS}


#: the recipe fields that are ``pitsolve reconstruct`` flags (``--steps-per-epoch`` is
#: ``steps_per_epoch``)
TRAINING_FIELDS = ("model", "latent", "hidden", "T", "epochs", "steps_per_epoch", "seq_len",
                   "batch_size", "lr", "forcing")

_PLACEHOLDER = ("placeholder: the Lorenz-63 defaults of `pitsolve reconstruct`, "
                "not yet measured on this system")

GENERIC = Recipe(source="generic: the Lorenz-63 defaults of `pitsolve reconstruct`, for "
                        "dysts systems and data files")
"""The recipe of ``dysts:NAME`` systems and data files."""

RECIPES: dict[str, Recipe] = {
    name: Recipe(source=_PLACEHOLDER) for name in SYSTEMS
}
_SHORT = ("measured over seeds 0–2 (docs/dsr.md, reference table): the Lorenz-63 defaults "
          "with 20 epochs (10 000 optimiser steps); not tuned for this system")
RECIPES["lorenz63"] = Recipe(
    source="measured over seeds 0–4: long free run median D_stsp 0.311, D_H 0.044, λ_max "
           "0.901 (docs/benchmarks.md, reconstruction); the GTF paper's shPLRNN settings "
           "(M = 3, L = 50, windows of 200, batches of 16, RAdam 1e-3 → 1e-5) with aGTF "
           "γ = 0.998 and 30 000 steps")
RECIPES["rossler"] = Recipe(
    epochs=20, forcing="gtf:0.05",
    source="measured over seeds 0–2 (docs/dsr.md, reference table): aGTF keeps α ≥ 0.2 here "
           "and its free-running models diverged from the 4th epoch on, so a fixed α = 0.05; "
           "20 epochs; not tuned further")
RECIPES["chen"] = Recipe(epochs=20, source=_SHORT)
RECIPES["halvorsen"] = Recipe(epochs=20, source=_SHORT)
RECIPES["lorenz96"] = Recipe(
    hidden=100, epochs=20, system_params=MappingProxyType({"N": 20}), lyapunov_max=1.552,
    source="measured over seeds 0–2 (docs/dsr.md, reference table): Lorenz-96 with N = 20 "
           "sites (λ_max 1.552 per time unit, computed here: "
           "SYSTEMS['lorenz96'].lyapunov_source), the Lorenz-63 defaults with 100 hidden "
           "units and 20 epochs; not tuned further",
)
"""The recipe of each built-in system, by the names of :data:`~pitsolve.dsr.systems.SYSTEMS`."""


def recipe(name: str | None) -> Recipe:
    """The recipe of a system: a built-in name (``"rossler"``; case and ``-``/``_`` as
    :func:`~pitsolve.dsr.systems.system` accepts them), or :data:`GENERIC` for ``"dysts:NAME"``
    and for None (a data file).

    Raises
    ------
    ValueError
        For any other name, listing the valid ones.
    """
    if name is None:
        return GENERIC
    if not isinstance(name, str):
        raise TypeError(f"name must be a str or None, got {type(name).__name__}")
    if name.startswith("dysts:"):
        return GENERIC
    key = name.lower().replace("-", "_")
    if key not in RECIPES:
        raise ValueError(f"no recipe for {name!r}; valid names: {', '.join(sorted(RECIPES))}, "
                         "dysts:NAME")
    return RECIPES[key]
