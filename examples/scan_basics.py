"""Linear recurrences h_t = A_t h_{t-1} + b_t solved with ParallelScan and with Sequential.

Solves a batch of diagonal and a batch of dense recurrences both ways, prints the largest
difference between the two trajectories and the ratio of their run times (measured side by
side in this run: warm-up, then the median of several calls), and, if matplotlib is
installed, saves a figure of a few state trajectories to examples/figures/scan_basics.png.

    python examples/scan_basics.py
"""

from __future__ import annotations

import time
from pathlib import Path

import numba
import numpy as np

import pitsolve as ps

FIGURE = Path(__file__).resolve().parent / "figures" / "scan_basics.png"


def diagonal_problem(rng: np.random.Generator, B: int, T: int, D: int):
    """Diagonal A_t with entries in (0.999, 0.9999): slowly contracting, with a forcing b_t.

    Rates this close to 1 keep the chunks' transfer maps (products of up to T/2 factors) far
    from the subnormal range, where CPUs compute 10-100 times slower.
    """
    A = rng.uniform(0.999, 0.9999, size=(B, T, D))
    b = 0.1 * rng.normal(size=(B, T, D))
    h0 = rng.normal(size=(B, D))
    return ps.LinearRecurrenceProblem(A, b, h0)


def dense_problem(rng: np.random.Generator, B: int, T: int, D: int):
    """Dense A_t: a slowly varying rotation in the first two components, damped, plus noise."""
    angle = 0.05 + 0.01 * rng.normal(size=(B, T))
    c, s = np.cos(angle), np.sin(angle)
    A = np.zeros((B, T, D, D))
    A[..., 0, 0], A[..., 0, 1], A[..., 1, 0], A[..., 1, 1] = c, -s, s, c
    A[..., 2:, 2:] = np.eye(D - 2) * 0.99
    A += 0.01 * rng.normal(size=A.shape)
    A *= 0.999
    b = 0.05 * rng.normal(size=(B, T, D))
    h0 = rng.normal(size=(B, D))
    return ps.LinearRecurrenceProblem(A, b, h0)


def median_time(prob, algorithm, repeats: int = 5) -> float:
    """Median wall time of solve, after one warm-up call (Numba compilation)."""
    ps.solve(prob, algorithm)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ps.solve(prob, algorithm)
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def compare(name: str, prob) -> tuple:
    par = ps.solve(prob, ps.ParallelScan())
    seq = ps.solve(prob, ps.Sequential())
    if not (ps.is_successful(par) and ps.is_successful(seq)):
        raise RuntimeError(f"{name}: {par.retcode} / {seq.retcode}")
    diff = float(np.max(np.abs(par.states - seq.states)))
    scale = float(np.max(np.abs(seq.states)))
    t_par = median_time(prob, ps.ParallelScan())
    t_seq = median_time(prob, ps.Sequential())
    B, T, D = prob.b.shape
    print(
        f"{name:8s}  B={B} T={T} D={D}:  max |ParallelScan - Sequential| = {diff:.2e} "
        f"(states up to {scale:.2f});  time ParallelScan / Sequential = {t_par / t_seq:.2f}"
    )
    return seq.states, par.states


def save_figure(runs: dict, steps: int = 400) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure (pip install matplotlib)")
        return
    fig, axes = plt.subplots(1, len(runs), figsize=(9, 3), constrained_layout=True)
    for ax, (name, (seq, par)) in zip(axes, runs.items(), strict=True):
        t = np.arange(1, steps + 1)
        for k in range(3):
            (line,) = ax.plot(t, seq[0, :steps, k], lw=2.5, alpha=0.35)
            ax.plot(t, par[0, :steps, k], lw=1, ls="--", color=line.get_color())
        ax.set_title(f"{name} $A_t$")
        ax.set_xlabel("step $t$")
    axes[0].set_ylabel("$h_{t,k}$, k = 0, 1, 2")
    axes[-1].plot([], [], color="0.5", lw=2.5, alpha=0.35, label="Sequential")
    axes[-1].plot([], [], color="0.5", lw=1, ls="--", label="ParallelScan")
    axes[-1].legend(loc="upper right", fontsize=8)
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=100)
    plt.close(fig)
    print(f"figure saved to {FIGURE}")


def main() -> None:
    rng = np.random.default_rng(0)
    print(f"pitsolve {ps.__version__}, {numba.get_num_threads()} Numba threads")
    runs = {
        "diagonal": compare("diagonal", diagonal_problem(rng, B=3, T=200_000, D=8)),
        "dense": compare("dense", dense_problem(rng, B=3, T=50_000, D=4)),
    }
    save_figure(runs)


if __name__ == "__main__":
    main()
