r"""Training objectives, and the trainer of the global one.

:func:`~pitsolve.fit` minimises one of two objectives, driven by one epoch loop
(:mod:`pitsolve.training.loop`):

:class:`GlobalObjective`
    the teacher-forced reconstruction loss of windows drawn from the series
    (:func:`~pitsolve.training.losses.loss_and_grad`), each optimiser step on ``batch_size``
    windows of ``seq_len`` steps (or the whole series), every forward solve by the given
    solver (GTF-DEER, GTF-BPTT, ...). Its trainer is :class:`GlobalTraining`.
:class:`LocalObjective`
    local objectives on the overlapping windows of a :class:`~pitsolve.Schwarz` partition of
    the whole series, coupled by ``mu``/2 times the squared overlap mismatch, the shared
    parameters kept equal by summed gradients (``sync="allreduce"``) or neighbour averaging
    (``sync="neighbour"``): :class:`~pitsolve.training.local.LocalTraining`.

A trainer is what the epoch loop drives: ``begin()`` (or ``load(arrays, meta)`` from a
checkpoint), then ``step()`` repeatedly; ``model()``, ``alpha()``, ``epoch_loss``,
``epoch_stats`` and ``learning_rate()`` report; ``state()`` gives what a checkpoint stores,
``snapshot()``/``restore()`` go back to the end of an epoch; ``guard()``, ``on_root`` and
``interruptible`` tell how it runs across processes.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from typing import Any, ClassVar, NamedTuple

import numpy as np

from .._arrays import array_namespace
from ..models import Model, Params, split_observed
from ..models.base import to_namespace
from ..parallel import MPIEngine
from ..parallel.slices import TimeSlices
from ..solution import SolverError
from .checkpoint import restore_rng, rng_state
from .forcing import estimate_alpha
from .losses import forced_loss
from .optim import OptimizerState

__all__ = ["GlobalObjective", "GlobalTraining", "LocalObjective", "StepFailed", "StepResult",
           "objective_of"]

_SYNC = ("allreduce", "neighbour")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GlobalObjective:
    """The global teacher-forced loss of windows drawn from the series (the default)."""

    name: ClassVar[str] = "global"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LocalObjective:
    r"""Local objectives on Schwarz windows (MATH.md §7, :mod:`pitsolve.training.local`).

    Parameters
    ----------
    mu
        μ ≥ 0, the weight of the overlap term :math:`\tfrac\mu2\sum\|z^{(p)}_t -
        z^{(q)}_t\|^2` that makes neighbouring windows agree.
    sync
        ``"allreduce"``: the windows' gradients of the shared parameters are summed (one
        all-reduce per step, the parameters stay equal); ``"neighbour"``: every window keeps a
        copy, averaged with its neighbours after each step (no global collective).
    """

    name: ClassVar[str] = "local"
    mu: float = 1.0
    sync: str = "allreduce"

    def __post_init__(self) -> None:
        if self.sync not in _SYNC:
            raise ValueError(f"sync must be one of {_SYNC}, got {self.sync!r}")
        mu = self.mu
        if isinstance(mu, bool) or not isinstance(mu, (int, float)) or not 0 <= mu < np.inf:
            raise ValueError(f"mu must be a finite number ≥ 0, got {mu!r}")


def objective_of(objective: Any) -> GlobalObjective | LocalObjective:
    """An objective from its name (``"global"``, ``"local"``) or as it is."""
    if isinstance(objective, (GlobalObjective, LocalObjective)):
        return objective
    if objective == "global":
        return GlobalObjective()
    if objective == "local":
        return LocalObjective()
    raise ValueError(
        "objective must be 'global', 'local', GlobalObjective() or LocalObjective(...), "
        f"got {objective!r}"
    )


class StepResult(NamedTuple):
    """One optimiser step: its loss (NaN where it has none), the solver iterations it took
    and the failed solves a fallback replaced."""

    loss: float
    iterations: int
    fallbacks: int = 0


class StepFailed(Exception):
    """An optimiser step could not be taken: ``reason`` (e.g. "the forward solve failed") and
    the detail; the loop stops training at the last completed epoch."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


def _windows(data: Any, seq_len: int | None, batch_size: int, rng: np.random.Generator) -> Any:
    """``batch_size`` windows of ``seq_len`` steps drawn uniformly from the series."""
    series = data if data.ndim == 3 else data[None]
    if seq_len is None or seq_len >= series.shape[1]:
        return series
    n_series, T = series.shape[:2]
    which = rng.integers(0, n_series, size=batch_size)
    start = rng.integers(0, T - seq_len + 1, size=batch_size)
    idx = start[:, None] + np.arange(seq_len)[None, :]
    xp = array_namespace(series)
    return series[xp.asarray(which)[:, None], xp.asarray(idx)]


class GlobalTraining:
    """The trainer of :class:`GlobalObjective` (see the module docstring).

    Each :meth:`step` draws ``batch_size`` windows of ``seq_len`` steps from ``data``
    (``seq_len`` None: the whole series), re-estimates α every ``update_every`` steps with
    adaptive GTF, computes the forced loss and its gradient with ``solver`` and updates the
    parameters with ``optimizer``.

    With ``comm`` one series is split by time over the ranks of an MPI communicator
    (``data`` this rank's slice): every step trains on the whole series
    (:func:`~pitsolve.training.losses.loss_and_grad` with ``comm``), the loss, α and the
    gradient are those of the whole series on every rank, so the parameters stay equal
    without being sent; rank 0 writes the checkpoints, which hold nothing of the split and
    so resume on any number of ranks.
    """

    kind: ClassVar[str] = "global"

    def __init__(self, model: Model, data: Any, *, forcing: Any, solver: Any, optimizer: Any,
                 controls: dict[str, Any], regularization: Any = None, seq_len: int | None,
                 batch_size: int, seed: int, comm: Any = None):
        model = to_namespace(model, array_namespace(data))  # parameters follow the data
        self.template, self.data = model, data
        self.forcing, self.solver, self.optimizer = forcing, solver, optimizer
        self.controls, self.regularization = controls, regularization
        self.seq_len, self.batch_size = seq_len, batch_size
        self.params = model.params
        self.opt_state = optimizer.init(self.params)
        self.rng = np.random.default_rng(seed)
        self._alpha = getattr(forcing, "initial_alpha", 0.0)
        self._model = model
        self.comm, self.slices = comm, TimeSlices(comm)
        self.engine = None if comm is None else MPIEngine(comm)

    # -- how it runs -------------------------------------------------------------------------
    @property
    def interruptible(self) -> bool:
        """Ctrl-C stops it at an epoch's end in one process (under MPI it aborts the job)."""
        return self.slices.size == 1

    @property
    def is_root(self) -> bool:
        return self.slices.rank == 0

    def guard(self) -> contextlib.AbstractContextManager[None]:
        """Under MPI: an exception on one rank ends the whole job."""
        return contextlib.nullcontext() if self.engine is None else self.engine.guard()

    def on_root(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on rank 0 only; its result, or its exception, on every rank."""
        return fn() if self.engine is None else self.engine.on_root(fn)

    def config(self) -> None:
        """What a resume must match besides the objective: nothing."""
        return None

    # -- the state ---------------------------------------------------------------------------
    def begin(self) -> None:
        """Start from the model given (nothing to compute)."""

    @property
    def steps(self) -> int:
        """Optimiser steps taken."""
        return int(self.opt_state.step)

    def state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """``(arrays, metadata)`` of a checkpoint: the optimiser state (``opt/...``) and the
        random generator (``rng``); the loop adds the model, the best model and the
        histories. None on the ranks after the first (rank 0 writes the checkpoint)."""
        if not self.is_root:
            return None
        return self.opt_state.to_arrays(prefix="opt/"), {"rng": rng_state(self.rng)}

    def load(self, arrays: dict[str, Any], meta: dict[str, Any]) -> None:
        """Continue from a checkpoint written by :meth:`state` (and the loop)."""
        xp = array_namespace(self.data)
        self.params = Params({k: xp.asarray(arrays[f"params/{k}"]) for k in self.params})
        self.opt_state = OptimizerState.from_arrays(arrays, self.params, prefix="opt/")
        self.rng = restore_rng(meta["rng"])
        self._alpha = meta["alpha"]
        self._model = self.template.replace(self.params)

    def with_params(self, params: Any) -> Model:
        """The model with ``params``, on the data's device (e.g. a checkpoint's best model)."""
        xp = array_namespace(self.data)
        return self.template.replace(Params({k: xp.asarray(v) for k, v in params.items()}))

    def snapshot(self) -> Any:
        """The state at the end of an epoch (everything in it is immutable or a copy)."""
        return self.params, self.opt_state, rng_state(self.rng), self._alpha

    def restore(self, snapshot: Any) -> None:
        self.params, self.opt_state, rng, self._alpha = snapshot
        self.rng = restore_rng(rng)
        self._model = self.template.replace(self.params)

    # -- one step ----------------------------------------------------------------------------
    def step(self) -> StepResult:
        """One optimiser step.

        Raises
        ------
        StepFailed
            If the forward solve fails, the gradient or the parameters become non-finite.
        """
        split = self.slices.split
        batch = self.data if split else _windows(self.data, self.seq_len, self.batch_size,
                                                 self.rng)
        if getattr(self.forcing, "adaptive", False) and self.steps % self.forcing.update_every == 0:
            latent, observation = split_observed(self._model)
            zhat = observation.forcing_signal(batch, latent.state_dim)
            self._alpha = estimate_alpha(latent, zhat, self.forcing, self._alpha, self.slices)
        try:
            loss, grads, sol = forced_loss(self._model, batch, forcing=self.forcing,
                                           solver=self.solver, alpha=self._alpha,
                                           regularization=self.regularization, comm=self.comm,
                                           **self.controls)
        except SolverError as exc:
            raise StepFailed("the forward solve failed", str(exc)) from exc
        try:
            params, self.opt_state = self.optimizer.update(self.params, grads, self.opt_state)
        except FloatingPointError as exc:
            raise StepFailed("non-finite gradient", str(exc)) from exc
        if not params.all_finite():
            raise StepFailed("parameters became non-finite")
        self.params = params
        self._model = self.template.replace(params)
        return StepResult(loss, sol.stats.iterations, int("fallback" in sol.stats.extra))

    # -- reports -----------------------------------------------------------------------------
    def model(self) -> Model:
        return self._model

    def alpha(self) -> float:
        return float(self._alpha)

    def epoch_loss(self, steps: list[StepResult]) -> float:
        """The mean loss of the epoch's steps."""
        return float(np.mean([s.loss for s in steps]))

    def epoch_stats(self, steps: list[StepResult]) -> dict[str, Any]:
        return {"fallbacks": sum(s.fallbacks for s in steps)}

    def learning_rate(self) -> float:
        return float(self.optimizer.learning_rate(self.steps))

