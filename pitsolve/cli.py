"""The ``pitsolve`` command line.

    pitsolve reconstruct [SYSTEM | --data FILE] ...   train a model on a chaotic series (main job)
    pitsolve evaluate PARAMS --data FILE              measure a trained model against data
    pitsolve simulate PARAMS --steps N --out FILE     generate a trajectory from a trained model
    pitsolve warmup [SYSTEM] [--solver ...]           compile and cache the kernels (first run)

Bad arguments and bad files end with a one-line error and exit status 2, never a traceback.
Ctrl-C during training saves a checkpoint that ``--resume`` continues.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import __version__
from ._cli_data import (
    UsageError,
    _load_data,
    _long_reference,
    _observed_model,
    _positive,
    _resolve,
    _split,
)
from ._jitlog import compile_messages
from .memory import tune_allocator

__all__ = ["main"]

SOLVERS = ("auto", "deer", "quasi-deer", "newton-krylov", "sequential", "schwarz")
#: ``--solver auto`` trains windows of at most this many steps with the sequential solver
#: (GTF-BPTT) and longer windows, the whole series and a split time axis with DEER: on a
#: CPU, a batch of 16 windows of 200 steps already keeps the cores busy, and DEER's Newton
#: iterations then cost 1.8× the sequential pass and gradient (docs/benchmarks.md)
AUTO_WINDOW = 1000
#: the long free run of the reference evaluation (steps), in D_H segments of LONG_SEGMENT
LONG_RUN, LONG_SEGMENT = 100_000, 10_000
ENGINES = ("serial", "threads", "mpi")
MODELS = ("shplrnn", "clipped", "alrnn")
OBSERVATIONS = ("auto", "identity", "affine")
# aGTF relaxation γ of `--forcing agtf`: faster than the GTF paper's 0.999, so that α
# reaches its estimate α̂ within the default 30 000 optimiser steps (docs/benchmarks.md)
AGTF_DECAY = 0.998


def _parser() -> argparse.ArgumentParser:
    from .dsr.recipes import RECIPES
    from .dsr.systems import SYSTEMS

    default = RECIPES["lorenz63"]

    def recipe_help(text: str, value: Any) -> str:
        return f"{text} (default: from the system's recipe; lorenz63: {value})"

    parser = argparse.ArgumentParser(
        prog="pitsolve", description="Solve and train nonlinear recurrences in parallel over time."
    )
    parser.add_argument("--version", action="version", version=f"pitsolve {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    rec = sub.add_parser(
        "reconstruct", help="train a model that reproduces a chaotic system (default Lorenz-63)",
        description="Train a shPLRNN with generalized teacher forcing (GTF-BPTT on short "
        "windows, GTF-DEER on long ones or the whole series) on a chaotic time series, keep the "
        "best free-running model, and report D_stsp, D_H, PE(20) and the maximal Lyapunov "
        "exponent on held-out data and on a long free run. Unset training options come from "
        "the system's recipe (pitsolve.dsr.recipes).")
    rec.add_argument("system", nargs="?", default=None, metavar="SYSTEM",
                     help=f"built-in system ({', '.join(sorted(SYSTEMS))}; default lorenz63), "
                     "dysts:NAME (a flow of the dysts package, pip install 'pitsolve[dysts]'), "
                     "or a data file (.npy, .npz, .csv, .txt)")
    rec.add_argument("--data", type=Path, help="train on a series from .npy/.npz/.csv/.txt "
                     "(the same as giving the file as SYSTEM)")
    rec.add_argument("--dt", type=float, default=None,
                     help="sampling step: of a data file (for λ_max per time unit), or of a "
                     "generated system (default: the built-in system's own; dysts: its "
                     "period/100)")
    rec.add_argument("--embed", default=None, metavar="DIM,LAG",
                     help="delay-embed a data file: DIM delayed copies of every column, LAG "
                     "steps apart (default: none)")
    rec.add_argument("--T", type=int, default=None,
                     help=recipe_help("training length of a generated system", default.T))
    rec.add_argument("--model", choices=MODELS, default=None,
                     help=recipe_help("latent model", default.model))
    rec.add_argument("--latent", type=int, default=None,
                     help=recipe_help("latent units M; M < N trains an affine observation "
                                      "model", default.latent or "the data dimension N"))
    rec.add_argument("--observation", choices=OBSERVATIONS, default="auto",
                     help="how the latent units are observed: identity (the first N units; "
                     "M ≥ N), affine (x = Bz + b, trained with the model), auto (default: "
                     "identity if M ≥ N, else affine)")
    rec.add_argument("--hidden", type=int, default=None,
                     help=recipe_help("hidden units L", default.hidden))
    rec.add_argument("--solver", choices=SOLVERS, default="auto",
                     help=f"auto (default): sequential (GTF-BPTT) for windows of at most "
                     f"{AUTO_WINDOW} steps, else deer (GTF-DEER)")
    rec.add_argument("--engine", choices=ENGINES, default="serial",
                     help="engine of --solver schwarz; mpi: run under mpiexec, rank 0 reports")
    rec.add_argument("--split-time", action="store_true",
                     help="split the training series by time over the MPI ranks (run under "
                     "mpiexec; the default there with --engine serial): every step trains "
                     "GTF-DEER on the whole series, rank 0 reports")
    rec.add_argument("--windows", type=int, default=None,
                     help="Schwarz windows (default: 4, or the number of MPI ranks if more)")
    rec.add_argument("--overlap", type=int, default=32, help="Schwarz overlap in steps")
    rec.add_argument("--forcing", default=None,
                     help=recipe_help(f"agtf[:GAMMA] | gtf:ALPHA | stf:TAU | none; agtf is "
                                      f"γ = {AGTF_DECAY}", default.forcing))
    rec.add_argument("--epochs", type=int, default=None,
                     help=recipe_help("epochs of --steps-per-epoch steps, each scored on "
                                      "held-out data", default.epochs))
    rec.add_argument("--steps-per-epoch", type=int, default=None,
                     help=recipe_help("optimiser steps per epoch", default.steps_per_epoch))
    rec.add_argument("--seq-len", type=int, default=None,
                     help=recipe_help("length of the training windows", default.seq_len))
    rec.add_argument("--batch-size", type=int, default=None,
                     help=recipe_help("windows per optimiser step", default.batch_size))
    rec.add_argument("--lr", type=float, default=None,
                     help=recipe_help("initial learning rate (decays to lr/100)", default.lr))
    seeds = rec.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=int, default=0, help="seed of the run (default 0)")
    seeds.add_argument("--seeds", default=None, metavar="LIST",
                       help="run once per seed (0-4, 0,2,5 or 3), each into OUT/seed-K/, then "
                       "write OUT/summary.json, a summary table and OUT/seeds.png")
    rec.add_argument("--long-run", type=int, default=LONG_RUN,
                     help=f"steps of the best model's long free run, measured against an "
                     f"independent true series (a data file: its training series); the "
                     f"reference figures of a run (default {LONG_RUN}; 0: none)")
    rec.add_argument("--out", type=Path, default=Path("pitsolve-run"))
    rec.add_argument("--resume", action="store_true",
                     help="continue from --out's checkpoint (with --seeds: each seed's)")
    rec.add_argument("--quiet", action="store_true", help="no progress bar")
    ev = sub.add_parser("evaluate", help="evaluate a trained model on a series")
    ev.add_argument("params", type=Path)
    ev.add_argument("--data", type=Path, required=True)
    ev.add_argument("--dt", type=float, default=None)
    ev.add_argument("--seed", type=int, default=0)
    wu = sub.add_parser(
        "warmup", help="compile and cache the kernels of reconstruct (once after installing)",
        description="Run reconstruct tiny (a few optimiser steps on a short series) for each "
        "--solver, so that every kernel the full run needs is compiled and cached on disk "
        "(Numba's cache, in each module's __pycache__ or NUMBA_CACHE_DIR): the first real run "
        "then starts training at once.")
    wu.add_argument("system", nargs="?", default="lorenz63",
                    help="a built-in system (default lorenz63): compiles its model's kernels")
    wu.add_argument("--solver", nargs="+", choices=SOLVERS, default=["auto"], dest="solvers",
                    help="the solvers to compile for (default: auto)")
    sim = sub.add_parser("simulate", help="generate a trajectory from a trained model")
    sim.add_argument("params", type=Path)
    sim.add_argument("--steps", type=int, required=True)
    sim.add_argument("--out", type=Path, required=True, help=".npy or .csv")
    sim.add_argument("--x0", type=float, nargs="+", default=None, help="initial observation")
    return parser


# -- pieces ---------------------------------------------------------------------------------
def _forcing(spec: str) -> Any:
    from .training import GTF, STF, NoForcing

    try:
        if spec == "agtf":
            return GTF(alpha="adaptive", decay=AGTF_DECAY)
        if spec == "none":
            return NoForcing()
        kind, _, value = spec.partition(":")
        if kind == "agtf":
            return GTF(alpha="adaptive", decay=float(value))
        if kind == "gtf":
            return GTF(alpha=float(value))
        if kind == "stf":
            return STF(interval=int(value))
    except ValueError as exc:
        raise UsageError(f"--forcing {spec}: {exc}") from None
    raise UsageError(
        f"--forcing must be agtf, agtf:GAMMA, gtf:ALPHA, stf:TAU or none, got {spec!r}")


def _auto_solver(args: argparse.Namespace) -> None:
    """Resolve ``--solver auto`` (see :data:`AUTO_WINDOW`) in ``args``."""
    if args.solver != "auto":
        return
    windows = not args.split_time and _launched_ranks() == 1 and args.seq_len <= AUTO_WINDOW
    args.solver = "sequential" if windows and args.engine == "serial" else "deer"
    args.solver_auto = True


def _solver(args: argparse.Namespace, ranks: int) -> Any:
    from . import DEER, NewtonKrylov, Schwarz, Sequential

    if args.solver == "schwarz":
        windows = args.windows if args.windows is not None else max(4, ranks)
        if args.overlap < 0:
            raise UsageError(f"--overlap must be ≥ 0, got {args.overlap}")
        if windows < 1:
            raise UsageError(f"--windows must be ≥ 1, got {windows}")
        if windows < ranks:
            raise UsageError(f"--windows {windows} is less than the {ranks} MPI ranks")
        return Schwarz(windows=windows, overlap=args.overlap, inner=DEER(), engine=args.engine)
    if args.engine != "serial":
        raise UsageError(f"--engine {args.engine} needs --solver schwarz")
    return {"deer": DEER(), "quasi-deer": DEER(jacobian="diagonal"),
            "newton-krylov": NewtonKrylov(), "sequential": Sequential()}[args.solver]


def _mpi_rank(engine: str) -> tuple[int, int]:
    """(rank, size) of MPI.COMM_WORLD with ``--engine mpi``, else (0, 1)."""
    if engine != "mpi":
        return 0, 1
    try:
        from mpi4py import MPI
    except ImportError:
        raise UsageError("--engine mpi needs mpi4py: pip install 'pitsolve[mpi]'") from None
    return MPI.COMM_WORLD.Get_rank(), MPI.COMM_WORLD.Get_size()


def _launched_ranks() -> int:
    """The number of ranks mpiexec started this process among (1 outside mpiexec), from the
    launchers' environment (MPICH's hydra: PMI_SIZE, Open MPI: OMPI_COMM_WORLD_SIZE)."""
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 1


def _launched_rank() -> int:
    """This process's rank among those mpiexec started (0 outside mpiexec)."""
    for name in ("PMI_RANK", "OMPI_COMM_WORLD_RANK"):
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return 0


def _split_comm(args: argparse.Namespace) -> Any:
    """COMM_WORLD when the series is split by time over the ranks (``--split-time``, or
    launched by mpiexec on several ranks with ``--engine serial``), else None."""
    if not args.split_time and not (_launched_ranks() > 1 and args.engine == "serial"):
        return None
    if args.engine != "serial" or args.solver not in ("deer", "quasi-deer", "sequential"):
        raise UsageError("--split-time trains with --solver deer, quasi-deer or sequential "
                         "and --engine serial")
    try:
        from mpi4py import MPI
    except ImportError:
        raise UsageError("--split-time needs mpi4py: pip install 'pitsolve[mpi]'") from None
    return MPI.COMM_WORLD


class _Progress:
    """A one-line progress bar on stderr, redrawn after every epoch."""

    def __init__(self, epochs: int, quiet: bool):
        self.epochs, self.quiet, self.t0 = epochs, quiet, time.perf_counter()

    def __call__(self, info: dict[str, Any]) -> None:
        if self.quiet:
            return
        done = info["epoch"] / self.epochs
        bar = "#" * int(24 * done) + "." * (24 - int(24 * done))
        val = info["stats"].get("validation", math.nan)
        sys.stderr.write(
            f"\r[{bar}] epoch {info['epoch']}/{self.epochs}  loss {info['loss']:.3e}  "
            f"α {info['alpha']:.3f}  D_stsp+D_H {val:.3f}  {time.perf_counter() - self.t0:.0f}s "
        )
        sys.stderr.flush()
        if info["epoch"] == self.epochs:
            sys.stderr.write("\n")


def _table(rows: dict[str, dict[str, Any]], truth_lyap: float | None) -> str:
    head = (f"{'':8s} {'D_stsp':>8s} {'D_H':>7s} {'PE(20)':>9s} {'λ_max/time':>11s} "
            f"{'λ_max/step':>11s}")
    lines = [head]
    for name, ev in rows.items():
        lt = ev["lyap_per_time"]
        lines.append(f"{name:8s} {ev['D_stsp']:8.3f} {ev['D_H']:7.3f} {ev['PE']:9.2e} "
                     f"{(lt if lt is not None else math.nan):11.3f} {ev['lyap_per_step']:11.4f}")
    if truth_lyap is not None:
        lines.append(f"{'truth':8s} {'':8s} {'':7s} {'':9s} {truth_lyap:11.3f}")
    return "\n".join(lines)


def _figure(path: Path, test: np.ndarray, gen: np.ndarray | None, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    from scipy.ndimage import gaussian_filter1d

    fig = plt.figure(figsize=(13, 4))
    n = min(len(test), 5000)
    if test.shape[1] >= 3:
        ax = fig.add_subplot(1, 3, 1, projection="3d")
        ax.plot(*test[:n, :3].T, lw=0.3, label="true")
        if gen is not None and np.isfinite(gen).all():
            ax.plot(*gen[:n, :3].T, lw=0.3, label="generated")
        ax.legend(loc="upper left")
    else:
        ax = fig.add_subplot(1, 3, 1)
        ax.plot(test[:n, 0], test[:n, -1], lw=0.3, label="true")
        if gen is not None and np.isfinite(gen).all():
            ax.plot(gen[:n, 0], gen[:n, -1], lw=0.3, label="generated")
        ax.legend()
    ax.set_title("attractor")
    ax2 = fig.add_subplot(1, 3, 2)
    m = min(len(test), 1500)
    ax2.plot(test[:m, 0], lw=0.8, label="true")
    if gen is not None:
        ax2.plot(gen[:m, 0], lw=0.8, label="generated")
    ax2.set_title("first dimension (free running)")
    ax2.set_xlabel("step")
    ax2.legend()
    ax3 = fig.add_subplot(1, 3, 3)
    for series, label in ((test, "true"), (gen, "generated")):
        if series is None or not np.isfinite(series).all():
            continue
        z = (series[:, 0] - series[:, 0].mean()) / (series[:, 0].std() + 1e-12)
        ps = gaussian_filter1d(np.abs(np.fft.rfft(z)) ** 2, 20)
        if ps.sum() > 0:  # a constant series (a model on a fixed point) has no spectrum
            ax3.semilogy(ps / ps.sum(), lw=0.8, label=label)
    ax3.set_title("power spectrum (dim 1, smoothed)")
    ax3.set_xlim(0, len(test) // 10)
    ax3.legend()
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


# -- commands -------------------------------------------------------------------------------
def _reconstruct(args: argparse.Namespace) -> int:
    kind, name, rec = _resolve(args)
    if args.seeds is None:
        return _reconstruct_one(args, kind, name, rec)[0]
    from ._cli_seeds import run_seeds

    return run_seeds(args, lambda a: _reconstruct_one(a, kind, name, rec),
                     announce=_launched_rank() == 0)


def _reconstruct_one(args: argparse.Namespace, kind: str, name: str,
                     rec: Any) -> tuple[int, dict[str, Any] | None]:
    """One reconstruction into ``args.out``: (exit status, the report; None on ranks > 0 and
    when interrupted)."""
    from .dsr.evaluate import evaluate, validation_score
    from .parallel.slices import even_rows
    from .training import fit, optim
    from .training.checkpoint import save_model

    t_start = time.perf_counter()
    _auto_solver(args)
    comm = _split_comm(args)
    rank, ranks = _mpi_rank(args.engine) if comm is None else (comm.Get_rank(), comm.Get_size())
    forcing, solver = _forcing(args.forcing), _solver(args, ranks)
    if rank > 0:  # every rank trains in lockstep; rank 0 alone reports and writes the outputs
        args.quiet = True
    x, n_eval, data_meta, what = _load_data(args, kind, name, rec)
    dt, truth_lyap = data_meta["dt"], data_meta["lyapunov_truth"]
    train, val, test = _split(x, n_eval)
    if args.seq_len > len(train):
        raise UsageError(f"--seq-len {args.seq_len} exceeds the training length {len(train)}")
    model, observation, described = _observed_model(args, x.shape[1])
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    ckpt = out / "checkpoint.npz"
    if args.resume and not ckpt.exists():
        raise UsageError(f"--resume: no checkpoint at {ckpt}")
    if rank == 0:
        print(f"pitsolve reconstruct: {what}, {len(train)} training steps, {described}, "
              f"forcing {args.forcing}, solver {args.solver}"
              f"{' (auto)' if getattr(args, 'solver_auto', False) else ''}, seed {args.seed}",
              file=sys.stderr)
    total = args.epochs * args.steps_per_epoch
    lr = optim.ExponentialDecay(lr_start=args.lr, lr_end=args.lr * 1e-2, steps=total)
    val_record: list[dict[str, float]] = []
    validate = validation_score(val, record=val_record)  # (scores affine-observed models in
    # the data space: evaluate applies pitsolve.dsr.observed.observation_view)

    seq_len: int | None = args.seq_len
    if comm is not None:  # this rank's slice of the series; rank 0 scores, the others wait
        lo, hi = even_rows(len(train), ranks, rank)
        train, seq_len, score = train[lo:hi], None, validate

        def validate(m: Any) -> float:
            return comm.bcast(score(m) if rank == 0 else None, root=0)

    result = fit(
        model, train, forcing=forcing, solver=solver, optimizer=optim.RAdam(lr=lr),
        epochs=args.epochs, steps_per_epoch=args.steps_per_epoch, seq_len=seq_len,
        batch_size=args.batch_size, seed=args.seed, callbacks=[_Progress(args.epochs, args.quiet)],
        checkpoint=ckpt, resume=args.resume, validate=validate, comm=comm,
    )
    if result.stopped and result.stopped.startswith("interrupted"):
        print(f"\npitsolve: interrupted; checkpoint saved to {ckpt}; continue with --resume",
              file=sys.stderr)
        return 130, None
    train_time = time.perf_counter() - t_start
    if rank > 0:
        return 0, None
    evals = {}
    gens = {}
    for label, m in (("best", result.best_model), ("final", result.model)):
        ev = evaluate(m, test, dt=dt, lyapunov_steps=20_000, seed=args.seed,
                      keep_trajectory=True)
        gens[label] = ev.generated
        evals[label] = ev.as_dict()
    reference_text = None
    if args.long_run:
        reference, reference_text = _long_reference(args, kind, name, rec, dt, train)
        evals["long"] = evaluate(result.best_model, reference, dt=dt, lyapunov_steps=20_000,
                                 seed=args.seed, spectrum_segment=LONG_SEGMENT).as_dict()
    meta = {**data_meta, "data": what}
    save_model(out / "model_best.npz", result.best_model, meta)
    save_model(out / "model_final.npz", result.model, meta)
    iters = sum(s["solver_iterations"] for s in result.stats)
    steps = sum(s["steps"] for s in result.stats)
    report = {
        "command": "reconstruct", "version": __version__, "data": what, "dt": dt,
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                   if k != "compile_log"},
        "recipe": rec.source, "observation": observation,
        "train_steps": len(train), "best_epoch": result.best_epoch, "epochs": result.epochs,
        "best": evals["best"], "final": evals["final"], **({"long": evals["long"]} if
                                                           args.long_run else {}),
        "long_reference": reference_text, "lyapunov_truth_per_time": truth_lyap,
        "wall_time_s": time.perf_counter() - t_start, "train_time_s": train_time,
        "solver_iterations_per_step": iters / max(steps, 1),
        "fallbacks": sum(s["fallbacks"] for s in result.stats),
        "loss_history": result.loss_history, "alpha_history": result.alpha_history,
        "validation": val_record, "stopped": result.stopped,
        "compile": args.compile_log.as_dict() if hasattr(args, "compile_log") else {},
    }
    (out / "report.json").write_text(json.dumps(report, indent=2, default=float))
    fig = _figure(out / "reconstruction.png", test, gens["best"],
                  f"{what}: best model (epoch {result.best_epoch})")
    print(_table(evals, truth_lyap))
    print(f"best, final: the models' free runs against the held-out test series ({len(test)} "
          f"steps)" + (f"; long: the best model's free run against {reference_text} (D_H: "
                       f"mean over {LONG_SEGMENT}-step segments), the reference figures"
                       if args.long_run else ""))
    its = ("" if args.solver == "sequential" else
           f", {report['solver_iterations_per_step']:.1f} solver iterations per step, "
           f"{report['fallbacks']} fallbacks")
    print(f"wall time {report['wall_time_s']:.0f} s, best epoch {result.best_epoch}/"
          f"{result.epochs}{its}")
    print(f"wrote {out / 'report.json'}, {out / 'model_best.npz'}, {out / 'model_final.npz'}, "
          f"{ckpt}" + (f", {out / 'reconstruction.png'}" if fig else
                       " (install matplotlib for reconstruction.png)"))
    if result.stopped:
        print(f"note: training stopped early: {result.stopped}", file=sys.stderr)
    return 0, report


def _warmup(args: argparse.Namespace) -> int:
    """Compile the kernels of ``reconstruct`` by running it tiny once per solver."""
    import contextlib
    import io
    import tempfile

    t0 = time.perf_counter()
    log = args.compile_log
    with tempfile.TemporaryDirectory() as tmp:
        for solver in args.solvers:
            argv = ["reconstruct", args.system, "--T", "3000", "--epochs", "1",
                    "--steps-per-epoch", "2", "--long-run", "1000", "--solver", solver,
                    "--quiet", "--out", str(Path(tmp) / solver)]
            tiny = _parser().parse_args(argv)
            tiny.compile_log = log
            with contextlib.redirect_stdout(io.StringIO()):
                status = _reconstruct(tiny)
            if status:
                return status
    log.close()  # ends the status line with the count; then nothing more at exit
    log.quiet = True
    print(f"pitsolve warmup: the kernels of reconstruct {args.system} "
          f"({', '.join(args.solvers)}) are compiled and cached "
          f"({time.perf_counter() - t0:.0f} s in all)")
    return 0


def _evaluate(args: argparse.Namespace) -> int:
    from .dsr.embedding import delay_embed
    from .dsr.evaluate import evaluate
    from .dsr.io import load_series
    from .training.checkpoint import load_model

    model, meta = load_model(args.params)
    x = load_series(args.data)
    if "mean" in meta:  # the model was trained on z-scored data: scale this series the same way
        if len(meta["mean"]) != x.shape[1]:
            raise UsageError(f"{args.data} has {x.shape[1]} columns, the model was trained on "
                             f"{len(meta['mean'])}")
        x = (x - np.asarray(meta["mean"])) / np.asarray(meta["std"])
    if meta.get("embed"):  # ... and delay-embed it as the training data were
        x = delay_embed(x, *meta["embed"])
    dt = args.dt if args.dt is not None else meta.get("dt")
    ev = evaluate(model, x, dt=dt, seed=args.seed)
    print(_table({"model": ev.as_dict()}, None))
    print(json.dumps(ev.as_dict()))
    return 0


def _simulate(args: argparse.Namespace) -> int:
    from .dsr.evaluate import generate
    from .dsr.io import save_series
    from .dsr.observed import AffineObservationView, observation_view
    from .training.checkpoint import load_model

    _positive(args, "steps")
    model, _ = load_model(args.params)
    view = observation_view(model)
    observed = view.observed if isinstance(view, AffineObservationView) else None
    x0 = np.zeros(1) if args.x0 is None else np.asarray(args.x0, dtype=float)
    limit = observed if observed is not None else view.state_dim
    if x0.size > limit:
        what = "observed dimensions" if observed is not None else "units"
        raise UsageError(f"--x0 has {x0.size} values, the model only {limit} {what}")
    traj = generate(view, x0, args.steps)
    if observed is not None:  # an affine observation: write the observations x = Bz + b
        traj = traj[:, :observed]
        text = f"{observed} observed dimensions (through the model's affine observation)"
    else:
        text = f"{view.state_dim} latent units"
    save_series(args.out, traj)
    print(f"wrote {args.steps} steps of {text} to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pitsolve`` command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    run = {"reconstruct": _reconstruct, "evaluate": _evaluate, "simulate": _simulate,
           "warmup": _warmup}
    tune_allocator()  # our own process: keep freed memory (fewer page faults per solve)
    # word on the screen while kernels compile (first run only), from one rank under mpiexec
    quiet = getattr(args, "quiet", False) or _launched_rank() > 0
    try:
        with compile_messages(quiet=quiet) as args.compile_log:
            return run[args.command](args)
    except (UsageError, ValueError, TypeError, FileNotFoundError, OSError) as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"pitsolve {args.command}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        hint = "; continue with --resume" if args.command == "reconstruct" else ""
        print(f"\npitsolve: interrupted{hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
