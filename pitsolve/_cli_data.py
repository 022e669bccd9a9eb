"""The data of ``pitsolve reconstruct``: where they come from (a built-in system, a dysts flow
or a file), the system's recipe filling the unset options, the series generated or read and
prepared, its split into training, validation and test, the long free run's reference, and the
model built for them (an identity or an affine observation of its latent units).

Part of the command line (:mod:`pitsolve.cli`); errors are :class:`UsageError`, reported there
in one line.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DATA_SUFFIXES", "UsageError"]

DATA_SUFFIXES = (".npy", ".npz", ".csv", ".txt")


class UsageError(Exception):
    """A user mistake reported in one line."""


def _positive(args: argparse.Namespace, *names: str) -> None:
    for name in names:
        v = getattr(args, name.replace("-", "_"))
        if v is not None and v < 1:
            raise UsageError(f"--{name} must be a positive integer, got {v}")


def _resolve(args: argparse.Namespace) -> tuple[str, str, Any]:
    """Where the data come from, ``(kind, name, recipe)`` with kind ``"system"`` (a built-in
    name), ``"dysts"`` (a dysts flow) or ``"file"`` (a path), from SYSTEM and ``--data``; fills
    every unset training option from the recipe and checks the options."""
    from .dsr.recipes import TRAINING_FIELDS, recipe
    from .dsr.systems import SYSTEMS

    spec = args.system
    if args.data is not None:
        if spec is not None:
            raise UsageError(f"give the data either as SYSTEM ({spec}) or with --data, not both")
        kind, name = "file", str(args.data)
    elif spec is None or spec.lower().replace("-", "_") in SYSTEMS:
        kind, name = "system", (spec or "lorenz63").lower().replace("-", "_")
        args.system = name
    elif spec.startswith("dysts:"):
        kind, name = "dysts", spec[len("dysts:"):]
        if not name:
            raise UsageError("dysts:NAME needs the name of a dysts flow, e.g. dysts:Rossler")
    elif Path(spec).suffix.lower() in DATA_SUFFIXES or Path(spec).exists():
        kind, name = "file", spec
        args.system, args.data = None, Path(spec)
    else:
        raise UsageError(f"unknown system {spec!r}; valid: {', '.join(sorted(SYSTEMS))}, "
                         "dysts:NAME, or a data file (.npy, .npz, .csv, .txt)")
    rec = recipe(name if kind == "system" else None)
    for field in TRAINING_FIELDS:
        if getattr(args, field) is None:
            setattr(args, field, getattr(rec, field))
    _positive(args, "T", "latent", "hidden", "epochs", "steps-per-epoch", "seq-len",
              "batch-size")
    if args.long_run != 0 and args.long_run < 1000:
        raise UsageError(f"--long-run must be 0 (none) or at least 1000 steps, got "
                         f"{args.long_run}")
    if args.lr <= 0 or not math.isfinite(args.lr):
        raise UsageError(f"--lr must be a positive number, got {args.lr}")
    if args.dt is not None and not (args.dt > 0 and math.isfinite(args.dt)):
        raise UsageError(f"--dt must be a positive number, got {args.dt}")
    if args.embed is not None:
        if kind != "file":
            raise UsageError("--embed applies to a data file, not to a generated system")
        args.embed = _embedding(args.embed)
    if args.seeds is not None and not isinstance(args.seeds, list):
        from .dsr.seeds import parse_seeds

        try:
            args.seeds = parse_seeds(args.seeds)
        except ValueError as exc:
            raise UsageError(f"--seeds {args.seeds}: {exc}") from None
    return kind, name, rec


def _embedding(spec: Any) -> list[int]:
    """``[DIM, LAG]`` of ``--embed DIM,LAG`` (positive integers)."""
    from .dsr.embedding import rows_lost

    if isinstance(spec, list):
        return spec
    try:
        dim, lag = (int(v) for v in str(spec).split(","))
        rows_lost(dim, lag)
    except ValueError as exc:
        detail = f": {exc}" if "must be" in str(exc) else ""
        raise UsageError(f"--embed must be DIM,LAG with two positive integers (e.g. 3,10), "
                         f"got {spec!r}{detail}") from None
    return [dim, lag]


def _load_data(args: argparse.Namespace, kind: str, name: str,
               rec: Any) -> tuple[np.ndarray, int, dict[str, Any], str]:
    """(z-scored series, held-out length, metadata (dt, λ_max of the truth, scaling), text).

    The last ``2·n_eval`` steps are held out: validation, then test. A generated series has
    ``--T`` training steps; a file's series keeps the rest after the held-out tail
    (:func:`pitsolve.dsr.prepare.prepare_series`).
    """
    from .dsr.io import load_series
    from .dsr.prepare import prepare_series
    from .dsr.systems import dysts_system, from_dysts, system

    if kind == "file":
        path = Path(name)
        embed = None if args.embed is None else (args.embed[0], args.embed[1])
        prep = prepare_series(load_series(path), name=str(path), embed=embed)
        meta = {"dt": args.dt, "lyapunov_truth": None,
                "mean": prep.mean.tolist(), "std": prep.std.tolist()}
        what = str(path)
        if embed is not None:
            meta["embed"] = list(embed)
            what += f" (delay-embedded: dim {embed[0]}, lag {embed[1]})"
        return prep.x, prep.n_eval, meta, what
    n_eval = max(1000, args.T // 10)
    if kind == "dysts":
        try:
            info = dysts_system(name)
        except ImportError:
            raise UsageError(f"dysts:{name} needs the dysts package: "
                             "pip install 'pitsolve[dysts]'") from None
        dt = args.dt if args.dt is not None else info.dt
        x = from_dysts(info.name, T=args.T + 2 * n_eval, dt=dt, seed=args.seed + 1)
        meta = {"dt": dt, "lyapunov_truth": info.lyapunov_max, "system": f"dysts:{info.name}"}
        return x, n_eval, meta, f"dysts:{info.name} (dt={dt:.6g})"
    info = system(name)
    params = dict(rec.system_params)
    dt = args.dt if args.dt is not None else info.dt
    kwargs = {"dt": args.dt} if args.dt is not None else {}
    x = info.generate(T=args.T + 2 * n_eval, seed=args.seed + 1, **kwargs, **params)
    truth = rec.lyapunov_max if rec.lyapunov_max is not None else info.lyapunov_max
    meta = {"dt": dt, "lyapunov_truth": truth, "system": name}
    if params:
        meta["system_params"] = params
    shown = "".join(f"{k}={v}, " for k, v in params.items())
    return x, n_eval, meta, f"{name} ({shown}dt={dt})"


def _long_reference(args: argparse.Namespace, kind: str, name: str, rec: Any, dt: float,
                    train: np.ndarray) -> tuple[np.ndarray, str]:
    """The true series the long free run is measured against, and its description: an
    independent trajectory of :data:`LONG_RUN` steps (seed ``--seed + 1001``) of a generated
    system; for a data file, the (prepared) training series itself."""
    from .dsr.systems import dysts_system, from_dysts, system

    seed, steps = args.seed + 1001, args.long_run
    if kind == "file":
        ref = train[-steps:]
        return ref, f"the training series' last {len(ref)} steps"
    if kind == "dysts":
        ref = from_dysts(dysts_system(name).name, T=steps, dt=dt, seed=seed)
    else:
        ref = system(name).generate(T=steps, dt=dt, seed=seed, **dict(rec.system_params))
    return ref, f"an independent true series of {steps} steps (seed {seed})"


def _split(x: np.ndarray, n_eval: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    n = len(x)
    return x[: n - 2 * n_eval], x[n - 2 * n_eval : n - n_eval], x[n - n_eval :]


def _model(kind: str, latent: int, hidden: int, seed: int) -> Any:
    from .models import ALRNN, ClippedShPLRNN, ShPLRNN

    if kind == "shplrnn":
        return ShPLRNN(latent, hidden, seed=seed)
    if kind == "clipped":
        return ClippedShPLRNN(latent, hidden, seed=seed)
    return ALRNN(latent, max(1, latent // 2), seed=seed)


def _observed_model(args: argparse.Namespace, N: int) -> tuple[Any, str, str]:
    """(model, observation kind, description) for data of N dimensions."""
    latent = args.latent or N
    observation = args.observation
    if observation == "auto":
        observation = "identity" if latent >= N else "affine"
    if observation == "identity" and latent < N:
        raise UsageError(f"--latent {latent} is less than the data dimension {N}: the identity "
                         f"observation needs --latent ≥ {N}; use --observation affine (the "
                         "default when --latent < N)")
    model = _model(args.model, latent, args.hidden, args.seed)
    text = f"{type(model).__name__}(M={latent}, L={args.hidden})"
    if observation == "affine":
        from .models import Affine, ObservedModel

        model = ObservedModel(model, Affine.init(N, latent, seed=args.seed))
        text += f" observed through Affine(N={N})"
    return model, observation, text
