"""DEER, quasi-DEER, Picard, damped DEER and Newton–Krylov against the Numba sequential loop.

    python benchmarks/deer.py [--quick] [--T 10000 100000] [--problems shplrnn_3x50 ...]
    python benchmarks/deer.py --memory [--T 10000 100000]   # NewtonKrylov on elman_256 only

For each standard problem (``pitsolve.testing.problems``, BENCHMARKS.md) and T, every algorithm
is timed after a warm-up call (JIT compilation) alternately with ``Sequential`` (the compiled
step loop), and printed as the ratio of the medians with the quartiles of the per-pair ratios
(the machine's speed drifts over seconds; pairs see the same drift), with iterations, the
return code, the error against the sequential trajectory and peak memory (NumPy allocations
traced by ``tracemalloc`` in a separate run, so tracing does not distort the timings).
Combinations whose dense Jacobians would not fit are skipped with the bytes they would need.

For ``elman_256`` the script also measures ``NewtonKrylov()`` (defaults) alone in a fresh
process: the whole process's maximum resident set size (``getrusage``; the imports, the problem
and a small warm-up solve before it are reported separately), ``stats.peak_bytes`` (the
trajectory plus the work arrays of the longest window), the windows, the Newton and Krylov
iterations and the wall time, against the bytes dense DEER's (T, D, D) Jacobians would hold.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
import tracemalloc

import numpy as np
from _timing import paired

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


def nk_memory_child(T):
    """In a fresh process: solve elman_256 with NewtonKrylov() and print the figures as JSON."""
    ps.solve(problems.elman_256(T=50).problem(), ps.NewtonKrylov())  # JIT caches, warm-up
    prob = problems.elman_256(T=T).problem()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    alg = ps.NewtonKrylov()
    t0 = time.perf_counter()
    sol = ps.solve(prob, alg, rtol=1e-8, atol=1e-10, maxiter=100)
    wall = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    s = sol.stats
    figures = dict(
        T=T, max_rss=rss, rss_before=before, peak_bytes=s.peak_bytes, window=s["window"],
        windows=s["windows"], restart=alg.restart, iterations=s.iterations,
        krylov=s.krylov_iterations, wall=wall, retcode=sol.retcode.name,
    )
    figures["max_err"] = float(np.max(np.abs(sol.states - ps.solve(prob, ps.Sequential()).states)))
    print(json.dumps(figures))


def nk_memory(T):
    """Run :func:`nk_memory_child` in a fresh interpreter (so that nothing else this script
    allocated counts) and print one line."""
    out = subprocess.run([sys.executable, __file__, "--nk-memory-child", str(T)],
                         capture_output=True, text=True, check=True).stdout
    f = json.loads(out.strip().splitlines()[-1])
    D = 256
    print(f"{'elman_256':22s} {T:7d} NewtonKrylov() alone: max RSS {f['max_rss'] / 1e6:.0f} MB "
          f"({f['rss_before'] / 1e6:.0f} MB before the solve), stats.peak_bytes "
          f"{f['peak_bytes'] / 1e6:.0f} MB, {f['windows']} window(s) of {f['window']} steps, "
          f"restart {f['restart']}, {f['iterations']} Newton / {f['krylov']} Krylov iterations, "
          f"{f['wall']:.1f} s, {f['retcode']}, max err {f['max_err']:.1e}; dense DEER's "
          f"Jacobians alone: {T * D * D * 8 / 1e9:.1f} GB")


def run(problem_names, Ts, repeats):
    print("ratio = median time / median Sequential time, the two timed alternately (pairs);\n"
          "quartiles of the per-pair ratios\n")
    print(f"{'problem':22s} {'T':>7s} {'algorithm':13s} {'time ms':>9s} {'ratio':>7s} "
          f"{'quartiles':11s} {'iters':>5s} {'retcode':10s} {'max err':>9s} {'peak MB':>8s}")
    for pname in problem_names:
        for T in Ts:
            model, h0, x = getattr(problems, pname)(T=T)
            prob = ps.RecurrenceProblem(model, h0, inputs=x, T=T)
            def seq(prob=prob):
                return ps.solve(prob, ps.Sequential())

            ref = seq()
            mem = peak_bytes(seq)
            print(f"{pname:22s} {T:7d} {'Sequential':13s} {'':>9s} {1.0:7.2f} {'':11s} "
                  f"{'-':>5s} {ref.retcode.name:10s} {0.0:9.1e} {mem / 1e6:8.1f}")
            for name, alg in ALGORITHMS.items():
                why = skip_reason(name, alg, model, T)
                if why:
                    print(f"{pname:22s} {T:7d} {name:13s} skipped: {why}")
                    continue

                def go(prob=prob, alg=alg):
                    return ps.solve(prob, alg, rtol=1e-8, atol=1e-10, maxiter=100)

                t_seq, t, spread, sol = paired(seq, go, repeats, limit=TIME_LIMIT / 4)
                mem = peak_bytes(go)
                err = np.max(np.abs(sol.states - ref.states))
                print(f"{pname:22s} {T:7d} {name:13s} {t * 1e3:9.2f} {t / t_seq:7.2f} "
                      f"{spread[0]:5.2f}-{spread[1]:<5.2f} {sol.stats.iterations:5d} "
                      f"{sol.retcode.name:10s} {err:9.1e} {mem / 1e6:8.1f}")
            if pname == "elman_256":
                nk_memory(T)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="T = 1e4 only, one repeat")
    parser.add_argument("--T", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--problems", nargs="+",
                        default=["shplrnn_3x50", "chaotic_clipped_3x50", "gru_64", "elman_256"])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--memory", action="store_true",
                        help="only NewtonKrylov's memory on elman_256, each T in a fresh process")
    parser.add_argument("--nk-memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--default-allocator", action="store_true",
                        help="do not call ps.tune_allocator() (glibc then returns freed "
                             "memory to the OS and pages fault in again)")
    args = parser.parse_args()
    # not for the memory runs: their figure is the peak resident size of the default allocator
    untuned = args.default_allocator or args.memory or args.nk_memory_child
    tuned = False if untuned else ps.tune_allocator()
    if args.nk_memory_child:
        nk_memory_child(args.nk_memory_child)
        return
    Ts = [10_000] if args.quick else args.T
    if args.memory:
        for T in Ts:
            nk_memory(T)
        return
    print(f"allocator: {'tuned (ps.tune_allocator)' if tuned else 'default'}")
    run(args.problems, Ts, 1 if args.quick else args.repeats)


if __name__ == "__main__":
    main()
