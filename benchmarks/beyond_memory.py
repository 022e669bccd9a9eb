"""Beyond memory in one process (issue 14, item 5): DEER in windows into a memory-mapped
trajectory, and the full parameter gradient window by window, against the in-memory solve.

Usage::

    python benchmarks/beyond_memory.py                 # T = 1e8; in-memory baselines 1e6, 1e7
    python benchmarks/beyond_memory.py --T 10000000    # a smaller target
    python benchmarks/beyond_memory.py --quick         # T = 1e6; baseline 1e5; 16 MB budget

Problem: ``shplrnn_3x50`` (D = 3, dense Jacobians, autonomous, float64). Each run is a fresh
child process (``--child``), so that its peak resident set size is its own (the child's
``getrusage(RUSAGE_SELF).ru_maxrss``, what the parent's ``RUSAGE_CHILDREN`` records for it;
the parent's running maximum over its children is printed too). Rows:

``windowed``
    ``solve(prob, DEER(max_bytes=...), out=memmap)`` with the states in a ``.npy`` file opened
    by ``numpy.lib.format.open_memmap`` in a temporary directory (``--dir``), then
    ``sol.vjp(g).params`` with ``g_t = (1, …, 1)`` for every t (a read-only broadcast: the
    loss is the sum of all states), which runs the transposed scan window by window;
``in memory``
    ``solve(prob, DEER())`` (one window, everything in memory, the Jacobians kept for the
    adjoint) and the same gradient, at the baseline T that fit.

Columns: T, the windows (number × length), the Newton iterations (all windows), the solve and
gradient wall times (after a small warm-up solve that compiles the kernels), the time per step
of each, their ratio to the in-memory run's (at the largest baseline T) — and the peak RSS,
with the RSS before the solve (imports, compiled kernels). Where a windowed and an in-memory
run share a T, ``grad rel. diff`` is the largest relative difference of their parameter
gradients. The pages of the memory-mapped trajectory that the process touched count in its
RSS (file-backed, written back by the kernel) as long as they stay mapped. Times are one run
each, on a shared machine: read the ratios, not the digits.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np


def _rss() -> int:
    """This process's peak resident set size in bytes (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def child(kind: str, T: int, max_bytes: float, directory: str) -> None:
    """One run in this (fresh) process; prints its figures as one JSON line."""
    import pitsolve as ps
    from pitsolve.testing import problems

    windowed = kind == "windowed"
    alg = ps.DEER(max_bytes=int(max_bytes)) if windowed else ps.DEER()
    small = problems.shplrnn_3x50(T=20_000).problem()  # compile the kernels
    for warm in (ps.DEER(window=5_000), ps.DEER()):
        _ = ps.solve(small, warm).vjp(np.ones((20_000, 3))).params
    prob = problems.shplrnn_3x50(T=T).problem()
    before = _rss()
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        out = None
        if windowed:
            out = np.lib.format.open_memmap(os.path.join(tmp, "states.npy"), mode="w+",
                                            dtype=np.float64, shape=(T, prob.D))
        t0 = time.perf_counter()
        sol = ps.solve(prob, alg, out=out)
        solve_s = time.perf_counter() - t0
        g = np.broadcast_to(np.ones(prob.D), (T, prob.D))  # dL/dh_t = 1: L = sum of states
        t0 = time.perf_counter()
        grad = sol.vjp(g).params
        grad_s = time.perf_counter() - t0
        s = sol.stats
        figures = dict(
            kind=kind, T=T, retcode=sol.retcode.name, iterations=s.iterations,
            window=s["window"], windows=s["windows"], solve_s=solve_s, grad_s=grad_s,
            peak_bytes=s.peak_bytes, rss_before=before, max_rss=_rss(),
            grad=np.concatenate([np.ravel(grad[k]) for k in sorted(grad)]).tolist(),
        )
        del sol, out
    print(json.dumps(figures))


def run_child(kind: str, T: int, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, __file__, "--child", kind, "--T", str(T),
           "--max-bytes", str(args.max_bytes), "--dir", args.dir]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        return dict(kind=kind, T=T, failed=out.stderr.strip().splitlines()[-1:] or ["?"])
    f = json.loads(out.stdout.strip().splitlines()[-1])
    f["children_max_rss"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    return f


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--T", type=float, default=1e8, help="the windowed run's T (1e8)")
    parser.add_argument("--baseline-T", type=float, nargs="+", default=[1e6, 1e7],
                        help="T of the in-memory runs (and windowed runs alike)")
    parser.add_argument("--max-bytes", type=float, default=None,
                        help="DEER(max_bytes=...) of the windowed runs (512e6; --quick 16e6)")
    parser.add_argument("--dir", default=tempfile.gettempdir(),
                        help="where the memory-mapped trajectory goes (a disk, not tmpfs)")
    parser.add_argument("--quick", action="store_true",
                        help="T = 1e6, baseline 1e5, max_bytes 16e6")
    parser.add_argument("--child", choices=["windowed", "in memory"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.max_bytes is None:
        args.max_bytes = 16e6 if args.quick else 512e6
    if args.child:
        child(args.child, int(args.T), args.max_bytes, args.dir)
        return
    target = 10**6 if args.quick else int(args.T)
    baselines = [10**5] if args.quick else sorted({int(t) for t in args.baseline_T})
    runs = [("in memory", T) for T in baselines] + [("windowed", T) for T in baselines]
    if target not in baselines:
        runs.append(("windowed", target))
    print(f"shplrnn_3x50 (D = 3, float64), DEER(max_bytes={args.max_bytes:.0f}) into a memmap "
          f"in {args.dir} vs DEER() in memory; one child process per row\n")
    head = (f"{'run':10s} {'T':>10s} {'windows':>16s} {'its':>4s} {'solve s':>8s} "
            f"{'grad s':>7s} {'solve ns/step':>13s} {'grad ns/step':>12s} {'ratio s/g':>10s} "
            f"{'peak RSS MB':>11s} {'before MB':>9s} {'grad rel. diff':>14s}")
    print(head)
    results: list[dict] = []
    for kind, T in runs:
        f = run_child(kind, T, args)
        results.append(f)
        if "failed" in f:
            print(f"{kind:10s} {T:10d} failed: {f['failed'][0]}")
            continue
        base = [r for r in results if r["kind"] == "in memory" and "failed" not in r]
        ref = base[-1] if base else None
        per_s, per_g = f["solve_s"] / T * 1e9, f["grad_s"] / T * 1e9
        ratio = ""
        if ref is not None and ref is not f:
            ratio = (f"{per_s / (ref['solve_s'] / ref['T'] * 1e9):.2f}/"
                     f"{per_g / (ref['grad_s'] / ref['T'] * 1e9):.2f}")
        same = [r for r in base if r["T"] == T and r is not f]
        diff = ""
        if same:
            a, b = np.array(f["grad"]), np.array(same[0]["grad"])
            diff = f"{np.max(np.abs(a - b)) / np.max(np.abs(b)):.1e}"
        windows = f"{f['windows']} × {f['window']}"
        print(f"{kind:10s} {T:10d} {windows:>16s} {f['iterations']:4d} {f['solve_s']:8.2f} "
              f"{f['grad_s']:7.2f} {per_s:13.1f} {per_g:12.1f} {ratio:>10s} "
              f"{f['max_rss'] / 1e6:11.0f} {f['rss_before'] / 1e6:9.0f} {diff:>14s}"
              + ("" if f["retcode"] == "Success" else f"  {f['retcode']}"))
    print(f"\nratio s/g: time per step of the solve / of the gradient over the in-memory run's "
          f"at the largest baseline T before it; max RSS over all children (RUSAGE_CHILDREN): "
          f"{resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e6:.0f} MB")


if __name__ == "__main__":
    main()
