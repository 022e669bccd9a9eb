"""GTF-DEER: how the forcing weight α turns a chaotic recurrence into one DEER can solve.

The benchmark ``pitsolve.testing.problems.chaotic_clipped_3x50`` is a clipped shPLRNN with
bounded chaos (λ_max ≈ +0.22 per step): plain DEER overflows on it. Generalized teacher
forcing mixes data into the state before each step,

    z_t = F(z~_{t-1}),    z~_t = (1 - α) z_t + α ẑ_t,

so the scan matrices of the Newton iteration become (1 - α) J_t, contracting once
α ≥ α* = 1 - 1/σ_max. Here the data are the model's own trajectory (so the forcing signal is
exactly consistent with the model), every unit is forced (``partial=False``), and for each α on
a grid the script solves the forced recurrence built by
``pitsolve.training.losses.forced_problem`` with DEER and quasi-DEER, printing the return code
and iterations. It also prints the estimates of α* from the Jacobians along the trajectory
(σ_max, and the geometric-mean "product" estimator of aGTF) and, if matplotlib is installed,
saves iterations against α to examples/figures/gtf_alpha_iterations.png (failures marked).

    python examples/gtf_alpha_iterations.py            # T = 1000
    python examples/gtf_alpha_iterations.py --T 2000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import pitsolve as ps
from pitsolve.testing import problems
from pitsolve.training.losses import forced_problem

FIGURE = Path(__file__).resolve().parent / "figures" / "gtf_alpha_iterations.png"

SOLVERS = {"DEER": ps.DEER(), "quasi-DEER": ps.DEER(jacobian="diagonal")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=int, default=1000, help="sequence length (default 1000)")
    parser.add_argument("--maxiter", type=int, default=100, help="DEER iteration limit")
    args = parser.parse_args()
    t_start = time.perf_counter()

    bench = problems.chaotic_clipped_3x50(T=args.T)
    model = bench.model
    data = ps.solve(bench.problem(), ps.Sequential()).states  # the model's own trajectory (T, 3)

    # the Jacobian bound of MATH.md §6 and the aGTF "product" estimate, along the data
    sigma = np.linalg.norm(model.jacobian(data), ord=2, axis=(-2, -1))
    sigma_max = float(sigma.max())
    kappa = float(np.exp(np.mean(np.log(sigma))))
    alpha_star = 1 - 1 / sigma_max
    alpha_product = 1 - 1 / kappa
    print(
        f"chaotic_clipped_3x50, T={args.T}, data = the model's own trajectory "
        f"(|z| up to {np.abs(data).max():.1f})"
    )
    print(
        f"largest Jacobian singular value σ_max = {sigma_max:.2f}  ->  α* = 1 - 1/σ_max = "
        f"{alpha_star:.3f}"
    )
    print(
        f"geometric mean of ‖J_t‖₂ (aGTF 'product' estimator) = {kappa:.2f}  ->  "
        f"α̂ = {alpha_product:.3f}\n"
    )

    alphas = np.round(np.arange(0.0, 0.951, 0.05), 2)
    print(f"{'alpha':>5s}  " + "  ".join(f"{name:>18s}" for name in SOLVERS))
    results: dict[str, list[tuple[float, str, int]]] = {name: [] for name in SOLVERS}
    for a in alphas:
        prob = forced_problem(model, data, ps.GTF(alpha=float(a), partial=False), float(a))
        cells = []
        for name, alg in SOLVERS.items():
            sol = ps.solve(prob, alg, maxiter=args.maxiter)
            results[name].append((float(a), sol.retcode.name, sol.stats.iterations))
            cells.append(f"{sol.retcode.name:>10s} {sol.stats.iterations:4d} it")
        print(f"{a:5.2f}  " + "  ".join(f"{c:>18s}" for c in cells))
    print(f"\n{time.perf_counter() - t_start:.1f} s in all")
    save_figure(results, alpha_star, alpha_product, args.T, args.maxiter)


def save_figure(
    results: dict, alpha_star: float, alpha_product: float, T: int, maxiter: int
) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no figure (pip install matplotlib)")
        return
    fig, ax = plt.subplots(figsize=(7, 3.8), constrained_layout=True)
    for k, (name, rows) in enumerate(results.items()):
        a = np.array([r[0] for r in rows])
        it = np.array([r[2] for r in rows], dtype=float)
        ok = np.array([r[1] == "Success" for r in rows])
        color = f"C{k}"
        ax.plot(a[ok], it[ok], "o-", color=color, label=f"{name}: converged")
        # a failure is drawn at the top of the plot: its iteration count means nothing
        ax.plot(
            a[~ok],
            np.full((~ok).sum(), maxiter * 1.08 + 6 * k),
            "x",
            color=color,
            ms=8,
            mew=2,
            label=f"{name}: failed (NonFinite / Diverged / MaxIters)",
        )
    ax.axvline(alpha_star, color="0.3", ls="--", lw=1)
    ax.text(
        alpha_star,
        0.97,
        r" $\alpha^* = 1 - 1/\sigma_{\max}$",
        rotation=90,
        va="top",
        ha="right",
        fontsize=8,
        transform=ax.get_xaxis_transform(),
    )
    ax.axvline(alpha_product, color="0.5", ls=":", lw=1)
    ax.text(
        alpha_product,
        0.97,
        r" aGTF $\hat\alpha$ (product)",
        rotation=90,
        va="top",
        ha="right",
        fontsize=8,
        transform=ax.get_xaxis_transform(),
    )
    ax.set_xlabel(r"forcing weight $\alpha$ (all units forced)")
    ax.set_ylabel("iterations to convergence")
    ax.set_ylim(0, maxiter * 1.2)
    ax.set_title(f"GTF-DEER on chaotic_clipped_3x50, T = {T}", fontsize=10)
    ax.legend(fontsize=7, loc="center left")
    FIGURE.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIGURE, dpi=100)
    plt.close(fig)
    print(f"figure saved to {FIGURE}")


if __name__ == "__main__":
    main()
