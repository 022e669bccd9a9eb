r"""The epoch loop of :func:`~pitsolve.fit`: one loop for every training objective.

It drives a trainer (:mod:`pitsolve.training.objectives`) through ``epochs`` epochs of
``steps_per_epoch`` optimiser steps and does everything that is not the objective's: the
histories (loss, α, per-epoch statistics), model selection by ``validate``, atomic
checkpoints every ``checkpoint_every`` epochs and exact resume
(:mod:`pitsolve.training.checkpoint`), progress lines, callbacks, and stopping — a failed
step, non-finite parameters, a callback or Ctrl-C — at the state of the last completed epoch.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from .._arrays import to_numpy
from ..models import Model
from .checkpoint import (
    best_arrays,
    check_resumable,
    load_checkpoint,
    restored_history,
    save_checkpoint,
    training_meta,
)
from .objectives import StepFailed

__all__ = ["FitResult", "run_epochs"]

log = logging.getLogger("pitsolve.training")


@dataclasses.dataclass
class FitResult:
    """The outcome of :func:`~pitsolve.fit`.

    Attributes
    ----------
    model
        the trained model (parameters after the last completed epoch).
    loss_history, alpha_history
        per epoch: training loss, α at the end of the epoch.
    stats
        per epoch: dict of solver iterations, wall time, learning rate and the objective's own
        entries (fallbacks; the overlap mismatch of local training).
    epochs
        epochs completed (including those before a resume).
    stopped
        None if training ran to the end, else why it stopped (NaN parameters, a callback, Ctrl-C).
    checkpoint
        the checkpoint path, if any.
    validation_history
        ``(epoch, score)`` pairs from ``validate`` (lower is better).
    best_model, best_score, best_epoch
        the model with the lowest validation score seen (the final model when no
        ``validate`` was given).
    """

    model: Model
    loss_history: list[float]
    alpha_history: list[float]
    stats: list[dict[str, Any]]
    epochs: int
    stopped: str | None = None
    checkpoint: str | None = None
    validation_history: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    best_model: Model | None = None
    best_score: float = math.inf
    best_epoch: int = 0


@dataclasses.dataclass
class _History:
    losses: list[float] = dataclasses.field(default_factory=list)
    alphas: list[float] = dataclasses.field(default_factory=list)
    stats: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    validation: list[tuple[int, float]] = dataclasses.field(default_factory=list)
    best: tuple[float, int, Any] = (math.inf, 0, None)  # score, epoch, parameters

    def mark(self) -> tuple[int, int, tuple[float, int, Any]]:
        return len(self.losses), len(self.validation), self.best

    def rewind(self, mark: tuple[int, int, tuple[float, int, Any]]) -> None:
        n, n_validation, self.best = mark
        del self.losses[n:], self.alphas[n:], self.stats[n:], self.validation[n_validation:]


def _finite(model: Model) -> bool:
    return model.params.all_finite()


def run_epochs(
    trainer: Any,
    *,
    epochs: int,
    steps_per_epoch: int,
    callbacks: Sequence[Callable[[dict[str, Any]], Any]] = (),
    progress: bool = False,
    checkpoint: str | None = None,
    checkpoint_every: int = 1,
    resume: bool = False,
    validate: Callable[[Model], float] | None = None,
    validate_every: int = 1,
) -> FitResult:
    """Train with ``trainer`` (see :func:`~pitsolve.fit` for the options); the best model is
    ``trainer.with_params(best parameters)``.

    With ``resume`` the checkpoint at ``checkpoint`` is read (on the root process, then shared)
    and checked against the trainer's objective and configuration (ValueError if another
    kind of training wrote it); a missing file starts from the beginning.
    """
    path = checkpoint
    history = _History()
    start_epoch = 0
    loaded = None
    if resume:
        if path is None:
            raise ValueError("resume=True needs checkpoint=PATH")
        loaded = trainer.on_root(lambda: load_checkpoint(path) if os.path.exists(path) else None)
    if loaded is not None:
        arrays, meta = loaded
        check_resumable(path, meta, trainer.kind, trainer.config())
        trainer.load(arrays, meta)
        losses, alphas, stats, validation, best = restored_history(arrays, meta,
                                                                   trainer.template.params)
        history = _History(losses, alphas, stats, validation)
        if best is not None:
            history.best = best
        start_epoch = int(meta["epoch"])
        log.info("resumed %s training from %s at epoch %d", trainer.kind, path,
                 start_epoch)
    else:
        trainer.begin()
    model = trainer.model()
    stopped = None

    def save() -> None:
        with trainer.guard():  # a failed write on the root ends an MPI job instead of hanging
            state = trainer.state()  # collective
            if state is None:  # not the root process
                return
            arrays, extra = state
            arrays.update({f"params/{k}": to_numpy(v) for k, v in model.params.items()})
            score, epoch, best_params = history.best
            arrays.update(best_arrays(best_params, epoch))
            alpha = history.alphas[-1] if history.alphas else trainer.alpha()
            meta = training_meta(trainer.kind, len(history.losses), alpha, history.losses,
                                 history.alphas, history.stats, history.validation, score,
                                 **extra)
            save_checkpoint(path, arrays, meta)

    # the state at the end of the last completed epoch: what a stop or Ctrl-C goes back to
    good = (trainer.snapshot(), model, history.mark())
    try:
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            steps = []
            try:
                for _ in range(steps_per_epoch):
                    steps.append(trainer.step())
            except StepFailed as exc:
                stopped = f"{exc.reason} at epoch {epoch + 1}" + (
                    f": {exc.detail}" if exc.detail else "")
            current = None if stopped else trainer.model()
            if current is not None and not _finite(current):
                stopped = f"parameters became non-finite at epoch {epoch + 1}"
            if stopped:
                trainer.restore(good[0])
                break
            model = current
            history.losses.append(trainer.epoch_loss(steps))
            history.alphas.append(trainer.alpha())
            stats = {"epoch": epoch + 1, "wall_time": time.perf_counter() - t0,
                     "steps": steps_per_epoch,
                     "solver_iterations": int(sum(s.iterations for s in steps)),
                     **trainer.epoch_stats(steps),
                     "learning_rate": trainer.learning_rate()}
            history.stats.append(stats)
            if validate is not None and (epoch + 1) % validate_every == 0:
                score = float(validate(model))
                history.validation.append((epoch + 1, score))
                stats["validation"] = score
                if score < history.best[0]:  # NaN never wins
                    history.best = (score, epoch + 1, model.params)
            good = (trainer.snapshot(), model, history.mark())
            if path is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs):
                save()
            if progress and trainer.is_root:
                mismatch = stats.get("overlap_mismatch")
                extra = "" if mismatch is None else f"  mismatch {mismatch:.2e}"
                print(f"epoch {epoch + 1:5d}/{epochs}  loss {history.losses[-1]:.4e}  "
                      f"alpha {history.alphas[-1]:.3f}{extra}  {stats['wall_time']:.2f}s",
                      file=sys.stderr)
            info = {"epoch": epoch + 1, "loss": history.losses[-1],
                    "alpha": history.alphas[-1], "model": model, "stats": stats}
            if any(cb(info) is True for cb in callbacks):
                stopped = f"stopped by a callback after epoch {epoch + 1}"
                break
    except KeyboardInterrupt:
        if not trainer.interruptible:  # under MPI, Ctrl-C aborts the job
            raise
        snapshot, model, mark = good
        trainer.restore(snapshot)
        history.rewind(mark)
        stopped = "interrupted (Ctrl-C)"
        if path is not None:
            save()
    if stopped:
        log.warning("training stopped: %s", stopped)
    score, best_epoch, best_params = history.best
    if validate is None or best_epoch == 0 or best_params is None:
        best_model, best_epoch = model, len(history.losses)
    else:
        best_model = trainer.with_params(best_params)
    return FitResult(model=model, loss_history=history.losses, alpha_history=history.alphas,
                     stats=history.stats, epochs=len(history.losses), stopped=stopped,
                     checkpoint=path, validation_history=history.validation,
                     best_model=best_model, best_score=score, best_epoch=best_epoch)
