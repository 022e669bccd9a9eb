"""Schwarz windows in time: a long recurrence split over cores or MPI ranks.

Solves the ``shplrnn_3x50`` benchmark recurrence over T = 100 000 steps three ways and checks
that they agree: the compiled sequential loop, and ``ps.Schwarz`` with one window per worker on
the chosen engine (``threads`` by default; ``mpi`` when launched with ``mpiexec``). Then it
sweeps the overlap δ on a slowly contracting recurrence whose windows are shorter than its
memory and plots the sweeps needed against δ (``examples/figures/schwarz_windows.png``, if
matplotlib is installed).

    python examples/schwarz_windows.py
    mpiexec -n 2 python examples/schwarz_windows.py --engine mpi
"""

from __future__ import annotations

import argparse
import statistics
import timeit
from pathlib import Path

import numpy as np

import pitsolve as ps
from pitsolve.testing import problems

FIGURE = Path(__file__).resolve().parent / "figures" / "schwarz_windows.png"
TOL = {"rtol": 1e-10, "atol": 1e-12}


def median_time(fn, repeats=7):
    """(median seconds of ``repeats`` calls after a warm-up call, the last result)."""
    out = [fn()]  # compile and warm up
    seconds = timeit.repeat(lambda: out.append(fn()), number=1, repeat=repeats)
    return statistics.median(seconds), out[-1]


def long_solve(engine: str, workers: int) -> bool:
    """The benchmark recurrence, sequential against Schwarz; True on the printing rank."""
    prob = problems.shplrnn_3x50(T=100_000).problem()
    alg = ps.Schwarz(windows=workers, overlap=128, engine=engine, workers=workers)
    t_seq, seq = median_time(lambda: ps.solve(prob, ps.Sequential()))
    t_sz, sol = median_time(lambda: ps.solve(prob, alg, **TOL))
    info = sol.stats["schwarz"]
    talk = info["rows"][0] == 0
    if talk:
        print(f"T = {prob.T}, {info['windows']} windows on the {engine} engine "
              f"({info['processes']} process(es)), overlap {info['overlap']}")
        print(f"  {sol.retcode.name}: {info['sweeps']} sweeps (final after "
              f"{info['sweeps_to_tolerance']}), work {info['work_ratio']:.3f} × T, "
              f"{info['bytes_exchanged']} bytes exchanged")
        print(f"  max |Schwarz - Sequential| = {np.abs(sol.states - seq.states).max():.1e}")
        print(f"  time Sequential {1e3 * t_seq:.2f} ms, Schwarz {1e3 * t_sz:.2f} ms: "
              f"speed-up {t_seq / t_sz:.2f} (depends on free cores)")
    return talk


def sweeps_against_overlap() -> dict:
    prob = problems.elman_memory(T=4000, rho=0.8).problem()  # memory ≈ 100 steps
    ref = ps.solve(prob, ps.Sequential()).states
    out = {"overlap": [], "sweeps": [], "final": [], "error": []}
    for d in (0, 5, 10, 20, 30, 39):
        sol = ps.solve(prob, ps.Schwarz(windows=100, overlap=d), **TOL)
        info = sol.stats["schwarz"]
        out["overlap"].append(d)
        out["sweeps"].append(info["sweeps"])
        out["final"].append(info["sweeps_to_tolerance"])
        out["error"].append(float(np.abs(sol.states - ref).max()))
    print("slow recurrence, T = 4000 in 100 windows of 40 steps:")
    for row in zip(*out.values(), strict=True):
        print("  δ = {:2d}: {} sweeps, final after {}, max error {:.1e}".format(*row))
    return out


def plot(out: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no figure")
        return
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    ax.plot(out["overlap"], out["final"], "o-", label="sweeps until the result is final")
    ax.plot(out["overlap"], out["sweeps"], "s--", label="sweeps with work")
    ax.set_xlabel("overlap δ (steps)")
    ax.set_ylabel("sweeps")
    ax.set_title("Schwarz windows shorter than the memory (ρ = 0.8, 40 steps)")
    ax.legend()
    fig.tight_layout()
    FIGURE.parent.mkdir(exist_ok=True)
    fig.savefig(FIGURE, dpi=120)
    print(f"figure saved to {FIGURE}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default="threads", choices=["serial", "threads", "mpi"])
    ap.add_argument("--workers", type=int, default=2, help="windows (and threads) for threads")
    args = ap.parse_args()
    if args.engine == "mpi":
        from mpi4py import MPI

        args.workers = MPI.COMM_WORLD.Get_size()
    if long_solve(args.engine, args.workers):
        plot(sweeps_against_overlap())


if __name__ == "__main__":
    main()
