"""DEER against Sequential as the sequence grows: wall time and iterations, T = 1e3 .. 1e5.

Solves the contracting benchmark shPLRNN (``pitsolve.testing.problems.shplrnn_3x50``, M = 3
latent units, L = 50 hidden units) for T = 1e3, 3e3, 1e4, 3e4 and 1e5 steps with
``Sequential`` (the compiled step loop), ``DEER`` (Newton, dense Jacobians) and quasi-DEER
(``DEER(jacobian="diagonal")``). Every solve is timed after a warm-up call as the median of a
few calls, side by side in this run. Prints the times as ratios to Sequential, the iterations
and the largest difference to the sequential trajectory, and, if matplotlib is installed, saves
a log-log plot of wall time against T to examples/figures/deer_scaling.png.

    python examples/deer_scaling.py            # T up to 1e5, three timed calls each
    python examples/deer_scaling.py --quick    # T up to 1e4, one timed call each

What to expect: the iteration count of a contracting problem does not grow with T (Newton
converges in a handful of iterations whatever the length), so every solver's time grows
linearly in T and the ratios settle to constants. On a CPU with a few cores those constants are
well above 1 (the compiled loop needs well under a microsecond per step); the parallel solvers
pay off with many cores or a GPU (docs/choosing.md).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numba
import numpy as np

import pitsolve as ps
from pitsolve.testing import problems

FIGURE = Path(__file__).resolve().parent / "figures" / "deer_scaling.png"

ALGORITHMS = {
    "Sequential": ps.Sequential(),
    "DEER": ps.DEER(),
    "quasi-DEER": ps.DEER(jacobian="diagonal"),
}


def median_time(prob, algorithm, repeats: int) -> tuple[float, ps.Solution]:
    """Median wall time of ``solve`` after one warm-up call, and the last solution."""
    sol = ps.solve(prob, algorithm)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        sol = ps.solve(prob, algorithm)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), sol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T up to 1e4, one timed call")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per case")
    args = parser.parse_args()
    Ts = [1_000, 3_000, 10_000] if args.quick else [1_000, 3_000, 10_000, 30_000, 100_000]
    repeats = 1 if args.quick else args.repeats

    print(f"pitsolve {ps.__version__}, {numba.get_num_threads()} Numba threads")
    print(
        "shplrnn_3x50 (M=3, L=50), float64, default tolerances; "
        f"median of {repeats} timed call(s) after a warm-up\n"
    )
    print(
        f"{'T':>7s} {'algorithm':11s} {'retcode':8s} {'iters':>5s} {'max |h - h_seq|':>15s} "
        f"{'time / Sequential':>17s} {'time per step':>13s}"
    )
    times: dict[str, list[float]] = {name: [] for name in ALGORITHMS}
    iterations: dict[str, list[int]] = {name: [] for name in ALGORITHMS}
    for T in Ts:
        prob = problems.shplrnn_3x50(T=T).problem()
        t_seq, ref = median_time(prob, ps.Sequential(), repeats)
        for name, alg in ALGORITHMS.items():
            t, sol = (t_seq, ref) if name == "Sequential" else median_time(prob, alg, repeats)
            if not ps.is_successful(sol):
                raise RuntimeError(f"{name} at T={T}: {sol.retcode}")
            err = float(np.max(np.abs(sol.states - ref.states)))
            times[name].append(t)
            iterations[name].append(sol.stats.iterations)
            print(
                f"{T:7d} {name:11s} {sol.retcode.name:8s} {sol.stats.iterations:5d} "
                f"{err:15.1e} {t / t_seq:17.1f} {t / T * 1e6:10.2f} µs"
            )
    save_figure(Ts, times, iterations)


def save_figure(Ts: list[int], times: dict, iterations: dict) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure (pip install matplotlib)")
        return
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(10, 3.8), constrained_layout=True)
    for (name, t), marker in zip(times.items(), "osd", strict=False):
        ax.loglog(Ts, t, marker=marker, label=name)
    # a line of slope 1 through Sequential's first point: time proportional to T
    ref = np.asarray(Ts, float) / Ts[0] * times["Sequential"][0]
    ax.loglog(Ts, ref, color="0.6", ls=":", lw=1, label=r"$\propto T$")
    ax.set_xlabel("sequence length $T$")
    ax.set_ylabel("wall time (s), median")
    ax.set_title("shplrnn_3x50: wall time", fontsize=10)
    ax.legend(fontsize=8)
    for (name, its), marker in zip(iterations.items(), "osd", strict=False):
        if name != "Sequential":
            ax2.semilogx(Ts, its, marker=marker, label=name, color=f"C{list(times).index(name)}")
    ax2.set_xlabel("sequence length $T$")
    ax2.set_ylabel("iterations to convergence")
    ax2.set_ylim(bottom=0)
    ax2.set_title("iterations (rtol = 1e-8, atol = 1e-10)", fontsize=10)
    ax2.legend(fontsize=8)
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=100)
    plt.close(fig)
    print(f"\nfigure saved to {FIGURE}")


if __name__ == "__main__":
    main()
