r"""``fit``: train a model on one long series or a batch of series with teacher forcing.

With the global objective (the default) each optimiser step draws ``batch_size`` windows of
``seq_len`` steps uniformly from the data (the whole series when ``seq_len`` is None),
computes the forced loss and its hand-derived gradient with the chosen solver
(:func:`~pitsolve.training.losses.loss_and_grad`), and updates the parameters; with adaptive
GTF, α is re-estimated every ``update_every`` steps from the Jacobians at the data-inferred
states. With ``objective=LocalObjective(...)`` the whole series is cut into the windows of a
:class:`~pitsolve.Schwarz` solver, each minimising its local objective
(:mod:`pitsolve.training.local`). One epoch loop drives both
(:func:`~pitsolve.training.loop.run_epochs`): checkpoints are written atomically every
``checkpoint_every`` epochs, and ``resume=True`` continues from the last one and ends with the
parameters an uninterrupted run would have reached (same backend and thread count). A
checkpoint records its objective (``"global"`` or ``"local"``), so that neither kind resumes
the other.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

from ..algorithms import DEER, Schwarz
from ..models import Model
from ..parallel.slices import collective_check
from .forcing import GTF, STF, NoForcing
from .local import LocalTraining, local_objective
from .loop import FitResult, run_epochs
from .losses import Regularization, check_data
from .objectives import GlobalObjective, GlobalTraining, LocalObjective, objective_of
from .optim import RAdam

__all__ = ["FitResult", "fit"]


def _objective(objective: Any, solver: Any) -> GlobalObjective | LocalObjective:
    """The objective of a run: ``objective``, or (deprecated) the one a
    ``Schwarz(objective=..., mu=..., sync=...)`` solver spells."""
    spelled = getattr(solver, "objective", None) if isinstance(solver, Schwarz) else None
    if spelled is None:
        return objective_of("global" if objective is None else objective)
    if objective is not None:
        raise ValueError(
            "give the objective once: fit(..., objective=...) and not also "
            "Schwarz(objective=...)"
        )
    if spelled not in ("global", "local"):
        raise ValueError(f"objective must be 'global' or 'local', got {spelled!r}")
    return GlobalObjective() if spelled == "global" else local_objective(solver)


def fit(
    model: Model,
    data: Any,
    *,
    forcing: GTF | STF | NoForcing | None = None,
    solver: Any = None,
    objective: str | GlobalObjective | LocalObjective | None = None,
    optimizer: Any = None,
    epochs: int = 10,
    steps_per_epoch: int | None = None,
    seq_len: int | str | None = "auto",
    batch_size: int = 16,
    seed: int = 0,
    callbacks: Sequence[Callable[[dict[str, Any]], Any]] = (),
    progress: bool = False,
    checkpoint: str | os.PathLike[str] | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    controls: dict[str, Any] | None = None,
    validate: Callable[[Model], float] | None = None,
    validate_every: int = 1,
    regularization: Regularization | None = None,
    comm: Any = None,
) -> FitResult:
    """Train ``model`` on ``data`` (a series ``(T, N)`` or a batch ``(B, T, N)``).

    Parameters
    ----------
    model
        the model to train; an :class:`~pitsolve.models.ObservedModel` trains its
        observation model too (checkpoints and the returned models include it).
    forcing
        :class:`GTF` (default ``GTF(alpha="adaptive")``), :class:`STF` or :class:`NoForcing`.
    solver
        algorithm of the forced recurrence: ``DEER()`` (default, GTF-DEER), ``Sequential()``
        (GTF-BPTT), ``DEER(jacobian="diagonal")``, ``NewtonKrylov()``; with the local
        objective a :class:`~pitsolve.Schwarz` (its windows, overlap, inner solver, engine).
    objective
        ``"global"`` (default, :class:`~pitsolve.training.objectives.GlobalObjective`: the
        forced loss of windows drawn from the data) or ``"local"`` /
        :class:`~pitsolve.training.objectives.LocalObjective` ``(mu=..., sync=...)``: local
        objectives on the Schwarz windows of the whole series (``seq_len=None``).
    optimizer
        default ``RAdam(lr=1e-3)``; an :class:`~pitsolve.training.optim.Optimizer` (``init``,
        ``update``, ``learning_rate`` and a checkpointable ``OptimizerState``).
    epochs, steps_per_epoch
        epochs and optimiser steps per epoch (default: enough windows to cover the data once).
    seq_len, batch_size
        window length (None: whole series; default 200, with ``comm`` None) and windows per
        step.
    callbacks
        each called as ``cb(info)`` after every epoch with a dict (epoch, loss, alpha, model,
        ...); returning True stops training.
    progress
        print one line per epoch to stderr.
    checkpoint, checkpoint_every, resume
        path of the atomic checkpoint file, its period in epochs, and whether to continue
        from it. With the local objective the checkpoint holds every window's variables and
        optimiser state and resumes only with the same partition, ``sync`` and ``mu``; a
        checkpoint of one objective never resumes a run of the other (ValueError).
    controls
        solve controls for every forward solve (default ``{"fallback": "sequential"}``, so a
        failed parallel solve never stops training; fallbacks are counted in ``stats``); with
        the local objective, ``engine`` may hold a configured engine (e.g.
        ``MPIEngine(comm)``).
    validate, validate_every
        model selection: ``validate(model) -> score`` (lower is better; NaN counts as worst)
        every ``validate_every`` epochs. The one-step forced loss does not measure long-term
        reconstruction, so DSR training scores the free-running model on held-out data and
        keeps the best parameters (``FitResult.best_model``).
    regularization
        optional :class:`~pitsolve.training.losses.Regularization` (λ_l, λ_o) added to the
        loss of every step (global objective).
    comm
        optional MPI communicator: one long series split by time over its ranks, ``data`` this
        rank's contiguous slice (global objective, ``seq_len=None``: every step trains on the
        whole series). The forward solves and adjoints run on the split time axis, the loss
        and gradient are the whole series' on every rank, rank 0 writes the checkpoints and
        a checkpoint resumes on any number of ranks. Launch with ``mpiexec -n R python
        script.py``; every rank calls ``fit`` with its slice.

    Notes
    -----
    ``solver=Schwarz(objective="local", mu=..., sync=...)`` is the deprecated spelling of
    ``solver=Schwarz(...), objective=LocalObjective(mu=..., sync=...)``; it works for one
    release with a :class:`DeprecationWarning`.
    """
    forcing = GTF(alpha="adaptive") if forcing is None else forcing
    solver = DEER() if solver is None else solver
    objective = _objective(objective, solver)
    optimizer = RAdam(lr=1e-3) if optimizer is None else optimizer
    controls = {"fallback": "sequential", **(controls or {})}
    if seq_len == "auto":
        seq_len = None if comm is not None else 200
    if comm is not None:
        if not isinstance(objective, GlobalObjective):
            raise ValueError("comm= trains the global objective on a series split by time; "
                             "the local objective runs on ranks through its Schwarz engine")
        if seq_len is not None:
            raise ValueError("with comm= every step trains on the whole series split over the "
                             f"ranks: pass seq_len=None, got {seq_len!r}")
    rank = 0 if comm is None else comm.Get_rank()
    data = collective_check(comm, lambda: check_data(data, model,
                                                     min_steps=2 if rank == 0 else 1))
    for name, v in (("epochs", epochs), ("batch_size", batch_size),
                    ("checkpoint_every", checkpoint_every), ("validate_every", validate_every)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if seq_len is not None and (not isinstance(seq_len, int) or seq_len < 2):
        raise ValueError(f"seq_len must be None or an integer ≥ 2, got {seq_len!r}")
    if seq_len is not None and seq_len > data.shape[-2]:
        raise ValueError(f"seq_len={seq_len} exceeds the series length {data.shape[-2]}")
    if steps_per_epoch is None:
        # enough windows to cover the data once (one step when every step sees all of it)
        total = data.shape[-2] * (data.shape[0] if data.ndim == 3 else 1)
        per_step = (seq_len or 1) * batch_size
        steps_per_epoch = 1 if seq_len is None else max(1, math.ceil(total / per_step))
    path = None if checkpoint is None else os.fspath(checkpoint)
    if resume and path is None:
        raise ValueError("resume=True needs checkpoint=PATH")
    if isinstance(objective, LocalObjective):
        if not isinstance(solver, Schwarz):
            raise TypeError("the local objective trains on the windows of a Schwarz solver: "
                            f"pass solver=ps.Schwarz(...), got {type(solver).__name__}")
        if seq_len is not None:
            raise ValueError(
                "local-objective training decomposes the whole series in time: pass "
                "seq_len=None"
            )
        if regularization is not None:
            raise ValueError("regularization is supported by the global objective only")
        trainer: Any = LocalTraining(model, data, forcing, solver, optimizer, controls,
                                     objective=objective, start=None)
    else:
        trainer = GlobalTraining(model, data, forcing=forcing, solver=solver,
                                 optimizer=optimizer, controls=controls,
                                 regularization=regularization, seq_len=seq_len,
                                 batch_size=batch_size, seed=seed, comm=comm)
    return run_epochs(trainer, epochs=epochs, steps_per_epoch=steps_per_epoch,
                      callbacks=callbacks, progress=progress, checkpoint=path,
                      checkpoint_every=checkpoint_every, resume=resume, validate=validate,
                      validate_every=validate_every)
