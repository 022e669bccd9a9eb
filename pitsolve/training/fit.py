r"""``fit``: train a model on one long series or a batch of series with teacher forcing.

Each optimiser step draws ``batch_size`` windows of ``seq_len`` steps uniformly from the data
(the whole series when ``seq_len`` is None), computes the forced loss and its hand-derived
gradient with the chosen solver (:func:`~pitsolve.training.losses.loss_and_grad`), and updates
the parameters. With adaptive GTF, α is re-estimated every ``update_every`` steps from the
Jacobians at the data-inferred states. Checkpoints are written atomically every
``checkpoint_every`` epochs; ``resume=True`` continues from the last one and ends with the
parameters an uninterrupted run would have reached (same backend and thread count). With
``solver=Schwarz(objective="local")`` the loop is :func:`~pitsolve.training.local.fit_local`,
whose checkpoints share this format; their metadata ``objective`` ("global" or "local") keeps
either kind from resuming the other.
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

import numpy as np

from ..backends import array_namespace
from ..models.base import Model, Params
from ..solution import SolverError
from .checkpoint import load_checkpoint, restore_rng, rng_state, save_checkpoint
from .forcing import GTF, STF, NoForcing, estimate_alpha
from .losses import Regularization, check_data, forced_loss
from .observation import split_observed
from .optim import OptimizerState, RAdam

__all__ = ["FitResult", "fit"]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class FitResult:
    """The outcome of :func:`fit`.

    Attributes
    ----------
    model
        the trained model (parameters after the last completed step).
    loss_history, alpha_history
        per epoch: mean training loss, α at the end of the epoch.
    stats
        per epoch: dict of solver iterations, fallbacks, wall time, learning rate.
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


def _state_arrays(params: Params, opt_state: OptimizerState) -> dict[str, Any]:
    arrays = {f"params/{k}": np.asarray(v) for k, v in params.items()}
    arrays.update(opt_state.to_arrays(prefix="opt/"))
    return arrays


# -- the checkpoint format shared by global and local-objective training ------------------------
# arrays: ``params/<name>`` (the model), ``best/<name>`` and ``best/epoch`` (the best model so
# far, with ``validate``), plus the objective's own state (``opt/...`` and the metadata ``rng``
# and ``alpha`` for the global objective; ``window/<p>/...`` and ``steps`` for the local one,
# see :meth:`pitsolve.training.local.LocalTraining.state_arrays`). Metadata: ``objective``
# ("global" when absent: checkpoints written before it was recorded), ``epoch``, ``alpha``,
# the histories, ``validation``, ``best_score`` and, for the local objective, ``schwarz``
# (the partition and coupling a resume must match).
def _history_meta(objective: str, epoch: int, alpha: float, losses: list[float],
                  alphas: list[float], stats: list[dict[str, Any]],
                  validation: list[tuple[int, float]], best_score: float,
                  **extra: Any) -> dict[str, Any]:
    """The metadata every training checkpoint holds (``extra``: the objective's own)."""
    return {"objective": objective, "epoch": epoch, "alpha": float(alpha),
            "loss_history": losses, "alpha_history": alphas, "stats": stats,
            "validation": [list(v) for v in validation], "best_score": best_score, **extra}


def _best_arrays(best_params: Params | None, best_epoch: int) -> dict[str, Any]:
    """``best/<name>`` and ``best/epoch`` (nothing before a validation has picked a model)."""
    if best_params is None or best_epoch <= 0:
        return {}
    arrays: dict[str, Any] = {f"best/{k}": v for k, v in best_params.items()}
    arrays["best/epoch"] = np.asarray(best_epoch)
    return arrays


def _restored_history(arrays: dict[str, Any], meta: dict[str, Any], template: Params
                      ) -> tuple[list[float], list[float], list[dict[str, Any]],
                                 list[tuple[int, float]], tuple[float, int, Params] | None]:
    """(losses, alphas, stats, validation, best) of a checkpoint; best is None if unset."""
    validation = [tuple(v) for v in meta.get("validation", [])]
    best = None
    if "best/epoch" in arrays:
        best_params = Params({k: arrays[f"best/{k}"] for k in template})
        best = (float(meta["best_score"]), int(arrays["best/epoch"]), best_params)
    return meta["loss_history"], meta["alpha_history"], meta["stats"], validation, best


def _describe(objective: str, schwarz: dict[str, Any] | None) -> str:
    if objective != "local":
        return "global-objective training (objective='global')"
    inner = ", ".join(f"{k}={(schwarz or {}).get(k)!r}"
                      for k in ("windows", "overlap", "sync", "mu"))
    return f"local-objective training (Schwarz(objective='local', {inner}))"


def _check_checkpoint(path: str, meta: dict[str, Any], objective: str,
                      schwarz: dict[str, Any] | None = None) -> None:
    """Raise ValueError unless ``meta`` is a checkpoint of the same kind of training.

    ``objective`` is "global" or "local"; for "local", ``schwarz`` is the run's partition and
    coupling (T, windows, overlap, sync, mu, bounds), which must equal the checkpoint's.
    """
    found = meta.get("objective", "global")
    if found != objective:
        raise ValueError(
            f"checkpoint {path!r} was written by {_describe(found, meta.get('schwarz'))}, but "
            f"this run uses {_describe(objective, schwarz)}; resume with the solver that wrote "
            "it, or pass a new checkpoint path"
        )
    if objective != "local" or schwarz is None:
        return
    saved = meta.get("schwarz") or {}
    differ = [k for k in ("T", "windows", "overlap", "sync", "mu") if saved.get(k) != schwarz[k]]
    if not differ and list(saved.get("bounds", [])) != list(schwarz["bounds"]):
        differ = ["bounds"]
    if differ:
        what = ", ".join(f"{k}={saved.get(k)!r} in the checkpoint but {schwarz[k]!r} now"
                         for k in differ)
        raise ValueError(
            f"checkpoint {path!r} was written by local-objective training with a different "
            f"Schwarz configuration: {what} ('T' counts the steps of the data); resume with "
            "the solver options and data of the run that wrote it, or pass a new checkpoint path"
        )


def fit(
    model: Model,
    data: Any,
    *,
    forcing: GTF | STF | NoForcing | None = None,
    solver: Any = None,
    optimizer: Any = None,
    epochs: int = 10,
    steps_per_epoch: int | None = None,
    seq_len: int | None = 200,
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
) -> FitResult:
    """Train ``model`` on ``data`` (a series ``(T, N)`` or a batch ``(B, T, N)``).

    Parameters
    ----------
    model
        the model to train; an :class:`~pitsolve.training.observation.ObservedModel` trains
        its observation model too (checkpoints and the returned models include it).
    forcing
        :class:`GTF` (default ``GTF(alpha="adaptive")``), :class:`STF` or :class:`NoForcing`.
    solver
        algorithm of the forced recurrence: ``DEER()`` (default, GTF-DEER), ``Sequential()``
        (GTF-BPTT), ``DEER(jacobian="diagonal")``, ``NewtonKrylov()``.
    optimizer
        default ``RAdam(lr=1e-3)``; an :class:`~pitsolve.training.optim.Optimizer` (``init``,
        ``update``, ``learning_rate`` and a checkpointable ``OptimizerState``).
    epochs, steps_per_epoch
        epochs and optimiser steps per epoch (default: enough windows to cover the data once).
    seq_len, batch_size
        window length (None: whole series) and windows per step.
    callbacks
        each called as ``cb(info)`` after every epoch with a dict (epoch, loss, alpha, model,
        ...); returning True stops training.
    progress
        print one line per epoch to stderr.
    checkpoint, checkpoint_every, resume
        path of the atomic checkpoint file, its period in epochs, and whether to continue
        from it. With ``Schwarz(objective="local")`` the checkpoint holds every window's
        variables and optimiser state (:func:`~pitsolve.training.local.fit_local`) and
        resumes only with the same partition, ``sync`` and ``mu``; a checkpoint of one
        objective never resumes a run of the other (ValueError).
    controls
        solve controls for every forward solve (default ``{"fallback": "sequential"}``, so a
        failed parallel solve never stops training; fallbacks are counted in ``stats``).
    validate, validate_every
        model selection: ``validate(model) -> score`` (lower is better; NaN counts as worst)
        every ``validate_every`` epochs. The one-step forced loss does not measure long-term
        reconstruction, so DSR training scores the free-running model on held-out data and
        keeps the best parameters (``FitResult.best_model``).
    regularization
        optional :class:`~pitsolve.training.losses.Regularization` (λ_l, λ_o) added to the
        loss of every step.
    """
    from ..algorithms import DEER

    forcing = GTF(alpha="adaptive") if forcing is None else forcing
    solver = DEER() if solver is None else solver
    optimizer = RAdam(lr=1e-3) if optimizer is None else optimizer
    controls = {"fallback": "sequential", **(controls or {})}
    data = check_data(data, model)
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
    if getattr(solver, "objective", "global") == "local":
        return _fit_local(model, data, forcing, solver, optimizer, epochs, steps_per_epoch,
                          seq_len, callbacks, progress, path, checkpoint_every, resume, controls,
                          validate, validate_every)

    params = model.params
    opt_state = optimizer.init(params)
    rng = np.random.default_rng(seed)
    alpha = getattr(forcing, "initial_alpha", 0.0)
    losses: list[float] = []
    alphas: list[float] = []
    stats: list[dict[str, Any]] = []
    start_epoch = 0
    validation: list[tuple[int, float]] = []
    best: tuple[float, int, Params] = (math.inf, 0, params)
    if resume:
        if path is None:
            raise ValueError("resume=True needs checkpoint=PATH")
        if os.path.exists(path):
            arrays, meta = load_checkpoint(path)
            _check_checkpoint(path, meta, "global")
            params = Params({k: arrays[f"params/{k}"] for k in params})
            opt_state = OptimizerState.from_arrays(arrays, params, prefix="opt/")
            rng = restore_rng(meta["rng"])
            alpha, start_epoch = meta["alpha"], meta["epoch"]
            losses, alphas, stats, validation, saved_best = _restored_history(arrays, meta,
                                                                              params)
            if saved_best is not None:
                best = saved_best
            log.info("resumed from %s at epoch %d", path, start_epoch)
    model = model.replace(params)
    step = start_epoch * steps_per_epoch
    stopped = None
    # the state at the end of the last completed epoch: what Ctrl-C saves
    good = (params, opt_state, rng_state(rng), alpha)
    try:
        for epoch in range(start_epoch, epochs):
            t0 = time.perf_counter()
            epoch_losses, iters, fallbacks = [], 0, 0
            for _ in range(steps_per_epoch):
                batch = _windows(data, seq_len, batch_size, rng)
                if getattr(forcing, "adaptive", False) and step % forcing.update_every == 0:
                    latent, observation = split_observed(model)
                    zhat = observation.forcing_signal(batch, latent.state_dim)
                    alpha = estimate_alpha(latent, zhat, forcing, alpha)
                try:
                    loss, grads, sol = forced_loss(model, batch, forcing=forcing, solver=solver,
                                                   alpha=alpha, regularization=regularization,
                                                   **controls)
                except SolverError as exc:
                    stopped = f"the forward solve failed at epoch {epoch + 1}: {exc}"
                    break
                try:
                    params, opt_state = optimizer.update(params, grads, opt_state)
                except FloatingPointError as exc:
                    stopped = f"non-finite gradient at epoch {epoch + 1}: {exc}"
                    break
                if not all(bool(np.isfinite(np.asarray(v)).all()) for v in params.values()):
                    stopped = f"parameters became non-finite at epoch {epoch + 1}"
                    break
                model = model.replace(params)
                epoch_losses.append(loss)
                iters += sol.stats.iterations
                fallbacks += "fallback" in sol.stats.extra
                step += 1
            if stopped:
                params, opt_state, _, alpha = good
                model = model.replace(params)
                break
            losses.append(float(np.mean(epoch_losses)))
            alphas.append(float(alpha))
            stats.append({"epoch": epoch + 1, "wall_time": time.perf_counter() - t0,
                          "steps": steps_per_epoch, "solver_iterations": iters,
                          "fallbacks": fallbacks,
                          "learning_rate": float(optimizer.learning_rate(step))})
            if validate is not None and (epoch + 1) % validate_every == 0:
                score = float(validate(model))
                validation.append((epoch + 1, score))
                stats[-1]["validation"] = score
                if score < best[0]:  # NaN never wins
                    best = (score, epoch + 1, params)
            good = (params, opt_state, rng_state(rng), alpha)
            if path is not None and ((epoch + 1) % checkpoint_every == 0 or epoch + 1 == epochs):
                _save(path, params, opt_state, rng, alpha, epoch + 1, losses, alphas, stats,
                      validation, best)
            info = {"epoch": epoch + 1, "loss": losses[-1], "alpha": alphas[-1], "model": model,
                    "stats": stats[-1]}
            if progress:
                print(f"epoch {epoch + 1:5d}/{epochs}  loss {losses[-1]:.4e}  "
                      f"alpha {alphas[-1]:.3f}  {stats[-1]['wall_time']:.2f}s", file=sys.stderr)
            if any(cb(info) is True for cb in callbacks):
                stopped = f"stopped by a callback after epoch {epoch + 1}"
                break
    except KeyboardInterrupt:
        params, opt_state, rng_dict, alpha = good
        model = model.replace(params)
        stopped = "interrupted (Ctrl-C)"
        if path is not None:
            _save(path, params, opt_state, restore_rng(rng_dict), alpha, len(losses), losses,
                  alphas, stats, validation, best)
    if stopped:
        log.warning("training stopped: %s", stopped)
    if validate is None or best[1] == 0:
        best_model, best_score, best_epoch = model, best[0], len(losses)
    else:
        best_model, best_score, best_epoch = model.replace(best[2]), best[0], best[1]
    return FitResult(model=model, loss_history=losses, alpha_history=alphas, stats=stats,
                     epochs=len(losses), stopped=stopped, checkpoint=path,
                     validation_history=validation, best_model=best_model,
                     best_score=best_score, best_epoch=best_epoch)


def _save(path: str, params: Params, opt_state: OptimizerState, rng: np.random.Generator,
          alpha: float, epoch: int, losses: list[float], alphas: list[float],
          stats: list[dict[str, Any]], validation: list[tuple[int, float]],
          best: tuple[float, int, Params]) -> None:
    meta = _history_meta("global", epoch, alpha, losses, alphas, stats, validation, best[0],
                         rng=rng_state(rng))
    arrays = _state_arrays(params, opt_state)
    arrays.update(_best_arrays(best[2], best[1]))
    save_checkpoint(path, arrays, meta)


def _fit_local(model: Model, data: Any, forcing: Any, solver: Any, optimizer: Any, epochs: int,
               steps_per_epoch: int, seq_len: int | None,
               callbacks: Sequence[Callable[[dict[str, Any]], Any]], progress: bool,
               path: str | None, checkpoint_every: int, resume: bool, controls: dict[str, Any],
               validate: Callable[[Model], float] | None, validate_every: int) -> FitResult:
    """``fit`` with ``Schwarz(objective="local")``: see :mod:`pitsolve.training.local`."""
    from .local import fit_local

    if seq_len is not None:
        raise ValueError(
            "local-objective training (Schwarz(objective='local')) decomposes the whole series "
            "in time: pass seq_len=None"
        )
    out = fit_local(model, data, forcing=forcing, solver=solver, optimizer=optimizer,
                    epochs=epochs, steps_per_epoch=steps_per_epoch, callbacks=callbacks,
                    progress=progress, controls=controls, validate=validate,
                    validate_every=validate_every, checkpoint=path,
                    checkpoint_every=checkpoint_every, resume=resume)
    best = out["best"]
    best_model = out["model"] if best[2] is None else best[2]
    return FitResult(model=out["model"], loss_history=out["losses"], alpha_history=out["alphas"],
                     stats=out["stats"], epochs=len(out["losses"]), stopped=out["stopped"],
                     checkpoint=path, validation_history=out["validation"],
                     best_model=best_model, best_score=best[0],
                     best_epoch=best[1] or len(out["losses"]))
