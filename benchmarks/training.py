"""Loss + full gradient on one sequence: GTF-DEER, GTF-quasi-DEER and GTF-Newton–Krylov
against the Numba GTF-BPTT, and Newton iterations per epoch over an aGTF training run.

    python benchmarks/training.py [--quick] [--T 10000 100000] [--threads N]

The model is the ``shplrnn_3x50`` recipe (BENCHMARKS.md) and the data ``lorenz63`` (dt = 0.01,
seed 1, z-scored), forced with GTF α = 0.2. Each route is timed after a warm-up call as the
median of several runs and printed as a ratio to ``Sequential`` (forward step loop + BPTT,
both compiled) timed in the same run, with the relative difference of its gradient. The
routes are timed in turn within each repeat, so a change of machine load hits all of them.
``--threads`` sets Numba's thread count (default: all cores); the load average is printed,
since on a shared machine parallel regions wait for descheduled threads.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numba
import numpy as np

import pitsolve as ps
from pitsolve.testing import problems

ROUTES = {
    "GTF-BPTT (Numba)": ps.Sequential(),
    "GTF-DEER": ps.DEER(),
    "GTF-quasi-DEER": ps.DEER(jacobian="diagonal"),
    "GTF-Newton-Krylov": ps.NewtonKrylov(),
}


def rel_diff(g, ref):
    num = sum(float(np.sum((g[k] - ref[k]) ** 2)) for k in ref)
    den = sum(float(np.sum(ref[k] ** 2)) for k in ref)
    return (num / den) ** 0.5


def gradient_table(Ts, repeats):
    print(f"{'T':>7s} {'route':20s} {'time ms':>9s} {'ratio':>7s} {'iters':>5s} "
          f"{'grad rel diff':>14s}")
    for T in Ts:
        model = problems.shplrnn_3x50(T=2).model
        data = ps.dsr.lorenz63(T=T, dt=0.01, seed=1)
        forcing = ps.GTF(alpha=0.2)

        def go(solver, model=model, data=data, forcing=forcing):
            return ps.training.losses.forced_loss(model, data, forcing=forcing, solver=solver,
                                                  rtol=1e-10, atol=1e-12)

        out = {name: go(solver) for name, solver in ROUTES.items()}  # warm-up
        times = {name: [] for name in ROUTES}
        for _ in range(repeats):  # interleaved: a change of load hits every route
            for name, solver in ROUTES.items():
                t0 = time.perf_counter()
                out[name] = go(solver)
                times[name].append(time.perf_counter() - t0)
        base_name = next(iter(ROUTES))
        base, ref = statistics.median(times[base_name]), out[base_name][1]
        for name in ROUTES:
            t, (_, grads, sol) = statistics.median(times[name]), out[name]
            print(f"{T:7d} {name:20s} {t * 1e3:9.2f} {t / base:7.2f} "
                  f"{sol.stats.iterations:5d} {rel_diff(grads, ref):14.2e}")


def training_run(epochs):
    """Newton iterations per optimiser step over an aGTF run with GTF-DEER."""
    data = ps.dsr.lorenz63(T=20_000, dt=0.01, seed=1)
    model = ps.models.ShPLRNN(3, 50, seed=0)
    res = ps.fit(model, data, forcing=ps.GTF(alpha="adaptive"), solver=ps.DEER(),
                 epochs=epochs, seq_len=200, batch_size=16, steps_per_epoch=20, seed=0)
    print("\naGTF training (seq_len 200, batch 16, 20 steps/epoch): DEER iterations per step")
    print(f"{'epoch':>5s} {'alpha':>7s} {'loss':>10s} {'iters/step':>10s} {'fallbacks':>9s}")
    for s, a, l in zip(res.stats, res.alpha_history, res.loss_history, strict=True):
        print(f"{s['epoch']:5d} {a:7.3f} {l:10.3e} {s['solver_iterations'] / s['steps']:10.2f} "
              f"{s['fallbacks']:9d}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--T", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="Numba threads")
    args = parser.parse_args()
    if args.threads is not None:
        numba.set_num_threads(args.threads)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"Numba threads {numba.get_num_threads()}, load average {load}\n")
    gradient_table([10_000] if args.quick else args.T, 1 if args.quick else args.repeats)
    training_run(3 if args.quick else args.epochs)


if __name__ == "__main__":
    main()
