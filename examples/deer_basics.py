"""A nonlinear recurrence solved by Sequential, DEER, quasi-DEER, Picard and Newton-Krylov.

Solves the contracting benchmark shPLRNN (``pitsolve.testing.problems.shplrnn_3x50``, M = 3
latent units, L = 50 hidden units, T = 2000 steps) with each algorithm, prints the return
code, the iterations, scans and model evaluations, the largest difference to the sequential
trajectory and the ratio of run times to Sequential (measured side by side in this run:
warm-up, then the median of several calls), and, if matplotlib is installed, saves the
residual history of each iterative solver to examples/figures/deer_convergence.png.

    python examples/deer_basics.py
"""

from __future__ import annotations

import time
from pathlib import Path

import numba
import numpy as np

import pitsolve as ps
from pitsolve.testing import problems

FIGURE = Path(__file__).resolve().parent / "figures" / "deer_convergence.png"

ALGORITHMS = {
    "Sequential": ps.Sequential(),
    "DEER": ps.DEER(),  # Newton: dense Jacobians, one dense scan per iteration
    "quasi-DEER": ps.DEER(jacobian="diagonal"),  # diagonal Jacobians, one diagonal scan
    "Picard": ps.DEER(jacobian="none"),  # h <- f(h): no Jacobian, no scan
    "NewtonKrylov": ps.NewtonKrylov(),  # GMRES on JVPs, quasi-DEER preconditioner
}


def median_time(prob, algorithm, repeats: int = 3) -> float:
    """Median wall time of solve, after one warm-up call (Numba compilation)."""
    ps.solve(prob, algorithm)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ps.solve(prob, algorithm)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    bench = problems.shplrnn_3x50(T=2000)
    prob = bench.problem()
    print(f"pitsolve {ps.__version__}, {numba.get_num_threads()} Numba threads")
    print(f"{bench.name}: {bench.model!r}, T={prob.T}, float64, default tolerances\n")

    ref = ps.solve(prob, ps.Sequential())
    t_seq = median_time(prob, ps.Sequential())
    print(
        f"{'algorithm':13s} {'retcode':8s} {'iters':>5s} {'scans':>5s} {'f evals':>7s} "
        f"{'max |h - h_seq|':>15s} {'time / Sequential':>17s}"
    )
    histories = {}
    for name, alg in ALGORITHMS.items():
        sol = ps.solve(prob, alg)
        if not ps.is_successful(sol):
            raise RuntimeError(f"{name}: {sol.retcode}")
        s = sol.stats
        err = float(np.max(np.abs(sol.states - ref.states)))
        ratio = 1.0 if name == "Sequential" else median_time(prob, alg) / t_seq
        print(
            f"{name:13s} {sol.retcode.name:8s} {s.iterations:5d} {s.scans:5d} "
            f"{s.function_evals:7d} {err:15.1e} {ratio:17.1f}"
        )
        if s.residual_history:
            histories[name] = s.residual_history
    # the stopping rule: max_t ||r_t|| / (atol + rtol ||h_t||) <= 1, float64 defaults
    tolerance = 1e-10 + 1e-8 * float(np.max(np.abs(ref.states)))
    save_figure(histories, tolerance)


def save_figure(histories: dict, tolerance: float) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(6.5, 3.6), constrained_layout=True)
    for (name, hist), marker in zip(histories.items(), "osd^", strict=False):
        r = np.asarray(hist, dtype=float)
        r[r == 0] = np.nan  # an exactly zero residual has no place on a log scale
        ax.semilogy(np.arange(len(r)), r, marker=marker, ms=4, lw=1.2, label=name)
    ax.axhline(tolerance, color="0.5", lw=0.8, ls="--")
    ax.text(
        0.4,
        tolerance,
        r"tolerance: atol + rtol $\mathrm{max}_t \|h_t\|_\infty$",
        color="0.4",
        fontsize=8,
        ha="left",
        va="top",
        transform=ax.get_yaxis_transform(),
    )
    ax.set_xlabel("iteration $k$")
    ax.set_ylabel(r"residual $\mathrm{max}_t \|r_t\|_\infty$")
    ax.set_title("shplrnn_3x50, T = 2000: residual before each iteration", fontsize=10)
    ax.legend(fontsize=8)
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=100)
    plt.close(fig)
    print(f"\nfigure saved to {FIGURE}")


if __name__ == "__main__":
    main()
