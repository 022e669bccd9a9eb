"""DEER, quasi-DEER, Picard, damped DEER and Newton–Krylov against the Numba sequential loop.

    python benchmarks/deer.py [--quick] [--T 10000 100000] [--problems shplrnn_3x50 ...]

For each standard problem (``pitsolve.testing.problems``, BENCHMARKS.md) and T, every algorithm
is timed after a warm-up call (JIT compilation) as the median of several runs, and printed as a
ratio to ``Sequential`` (the compiled step loop) timed in the same run, with iterations, the
return code, the error against the sequential trajectory and peak memory (NumPy allocations
traced by ``tracemalloc`` in a separate run, so tracing does not distort the timings).
Combinations whose dense Jacobians would not fit are skipped with the bytes they would need.
"""

from __future__ import annotations

import argparse
import statistics
import time
import tracemalloc

import numpy as np

import pitsolve as ps
from pitsolve.testing import problems

ALGORITHMS = {
    "DEER": ps.DEER(),
    "quasi-DEER": ps.DEER(jacobian="diagonal"),
    "Picard": ps.DEER(jacobian="none"),
    "DEER+LS": ps.DEER(damping=ps.LineSearch()),
    "DEER+LM": ps.DEER(damping=ps.LevenbergMarquardt(lam=1e-3)),
    "NewtonKrylov": ps.NewtonKrylov(),
}
DENSE_LIMIT = 2e9  # bytes of (T, D, D) Jacobians we allow
TIME_LIMIT = 60.0  # seconds a single run may take before we stop repeating it


def timed(fn, repeats):
    fn()  # warm-up: JIT compilation and caches
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
        if times[-1] > TIME_LIMIT / 4:
            break
    return statistics.median(times), out


def peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def skip_reason(name, alg, model, T):
    D = model.state_dim
    dense = getattr(alg, "jacobian", "none") == "full" and model.jacobian_structure == "dense"
    if dense and T * D * D * 8 > DENSE_LIMIT:
        return f"dense Jacobians need {T * D * D * 8 / 1e9:.1f} GB"
    if dense and D > 16 and T > 10_000:
        return "dense scan O(T·D³) too slow at this D on 2 cores"
    if name == "DEER+LM" and D > 16:
        return "LM smoother O(T·D³·log T) too slow at this D"
    if name in ("DEER+LS", "DEER+LM") and T > 10_000 and D > 3:
        return "damped variants benchmarked at T = 1e4 only"
    return None


def run(problem_names, Ts, repeats):
    print(f"{'problem':22s} {'T':>7s} {'algorithm':13s} {'time ms':>9s} {'ratio':>7s} "
          f"{'iters':>5s} {'retcode':10s} {'max err':>9s} {'peak MB':>8s}")
    for pname in problem_names:
        for T in Ts:
            model, h0, x = getattr(problems, pname)(T=T)
            prob = ps.RecurrenceProblem(model, h0, inputs=x, T=T)
            t_seq, ref = timed(lambda prob=prob: ps.solve(prob, ps.Sequential()), repeats)
            mem = peak_bytes(lambda prob=prob: ps.solve(prob, ps.Sequential()))
            print(f"{pname:22s} {T:7d} {'Sequential':13s} {t_seq * 1e3:9.2f} {1.0:7.2f} "
                  f"{'-':>5s} {ref.retcode.name:10s} {0.0:9.1e} {mem / 1e6:8.1f}")
            for name, alg in ALGORITHMS.items():
                why = skip_reason(name, alg, model, T)
                if why:
                    print(f"{pname:22s} {T:7d} {name:13s} skipped: {why}")
                    continue

                def go(prob=prob, alg=alg):
                    return ps.solve(prob, alg, rtol=1e-8, atol=1e-10, maxiter=100)

                t, sol = timed(go, repeats)
                mem = peak_bytes(go)
                err = np.max(np.abs(sol.states - ref.states))
                print(f"{pname:22s} {T:7d} {name:13s} {t * 1e3:9.2f} {t / t_seq:7.2f} "
                      f"{sol.stats.iterations:5d} {sol.retcode.name:10s} {err:9.1e} "
                      f"{mem / 1e6:8.1f}")
            if pname == "elman_256":
                D = model.state_dim
                print(f"{'':22s} {T:7d} dense DEER would hold {T * D * D * 8 / 1e9:.1f} GB of "
                      "Jacobians alone")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T = 1e4 only, one repeat")
    parser.add_argument("--T", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--problems", nargs="+",
                        default=["shplrnn_3x50", "chaotic_clipped_3x50", "gru_64", "elman_256"])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    Ts = [10_000] if args.quick else args.T
    run(args.problems, Ts, 1 if args.quick else args.repeats)


if __name__ == "__main__":
    main()
