"""The time axis split over MPI ranks (issue 14): per-rank memory and time of the scan and of
DEER against one process holding everything, and a projection to many ranks.

Usage::

    python benchmarks/distributed.py            # scan T = 4e7 (diagonal, D = 1, float64),
                                                # DEER T = 4e6 (shplrnn_3x50, dense, float64)
    python benchmarks/distributed.py --quick    # scan T = 4e6, DEER T = 4e5

The script starts ``mpiexec -n P`` on itself for P = 1, 2, 4 (``NUMBA_NUM_THREADS=1`` per rank)
and a single process holding the whole series (1 thread), each in a fresh process so that its
peak RSS is its own. Columns:

``scan s``
    the median wall time of ``solve(LinearRecurrenceProblem(..., comm=), ParallelScan())``
    (rank 0's; every rank waits for the collective) — the single process: the same solve
    without ``comm``;
``peak MiB`` / ``of single``
    the largest peak RSS over the ranks, and its ratio to the single process's (target for
    4 ranks: ≤ 0.35);
``allgather µs``
    the measured time of one ``allgather`` of the scan's summary (the latency α of the
    projection);
``over base``
    the peak RSS less the process's RSS after imports and compilation (the interpreter, NumPy,
    Numba and the compiled kernels: a fixed cost per rank), over the same for the single
    process — how the memory of the problem itself divides.

The DEER rows solve ``shplrnn_3x50`` (D = 3, dense Jacobians, autonomous: every rank is given
the global T, split evenly) with ``DEER()``; ``its`` is the Newton iterations, equal to the
single process's by construction (tests/test_mpi.py).

Projection (docs/benchmarks.md, "Projection to many ranks"): a DEER iteration costs
``t(P) ≈ c · (T/P) · (1 + σ) + 4 α(P) + β P 8 (D² + D)``, with ``c`` the measured per-step time
of one process, σ ≈ 0.3 the dense scan's summary pass, ``α(P) ≈ α₀ log₂ P`` the latency of a
collective (α₀ measured here between processes of one machine; on a cluster use the
interconnect's) and β the inverse bandwidth. The machine here has 2 cores, so P = 4 is
oversubscribed and its times are an upper bound.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _deer_problem(T: int, comm: object = None) -> tuple:
    import pitsolve as ps
    from pitsolve.testing import problems

    bp = problems.shplrnn_3x50(T=T)
    ps.solve(ps.RecurrenceProblem(bp.model, bp.h0, T=1000), ps.DEER())  # compile
    return ps.RecurrenceProblem(bp.model, bp.h0, T=T, comm=comm), ps.DEER()


def worker(T: int, repeats: int, kind: str) -> None:
    from mpi4py import MPI

    import pitsolve as ps

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    if kind == "deer":
        prob, alg = _deer_problem(T, comm)
        base = _peak_mib()
    else:
        alg = ps.ParallelScan()
        small = ps.LinearRecurrenceProblem(np.ones((1000, 1)), np.ones((1000, 1)),
                                           np.zeros(1) if rank == 0 else None, comm=comm)
        ps.solve(small, alg)  # compile
        base = _peak_mib()
        lo, hi = rank * T // size, (rank + 1) * T // size
        rng = np.random.default_rng(rank)
        A = rng.uniform(-1, 1, (hi - lo, 1))
        b = rng.normal(size=(hi - lo, 1))
        prob = ps.LinearRecurrenceProblem(A, b, np.zeros(1) if rank == 0 else None, comm=comm)
        ps.solve(prob, alg)  # untimed: the first touch of the arrays
    times = []
    for _ in range(repeats):
        comm.Barrier()
        t = time.perf_counter()
        sol = ps.solve(prob, alg)
        comm.Barrier()
        times.append(time.perf_counter() - t)
    summary = (np.ones((1,)), np.ones((1,)))
    comm.Barrier()
    t = time.perf_counter()
    for _ in range(100):
        comm.allgather(summary)
    latency = (time.perf_counter() - t) / 100
    peaks = comm.gather((_peak_mib(), base), root=0)
    if rank == 0:
        top = max(peaks)
        print(json.dumps({"P": size, "time": float(np.median(times)), "peak": top[0],
                          "base": top[1], "allgather": latency,
                          "its": sol.stats.iterations, "retcode": sol.retcode.name}))


def single(T: int, repeats: int, kind: str) -> None:
    import pitsolve as ps

    if kind == "deer":
        prob, alg = _deer_problem(T)
        base = _peak_mib()
    else:
        alg = ps.ParallelScan()
        ps.solve(ps.LinearRecurrenceProblem(np.ones((1000, 1)), np.ones((1000, 1)),
                                            np.zeros(1)), alg)  # compile
        base = _peak_mib()
        rng = np.random.default_rng(0)
        prob = ps.LinearRecurrenceProblem(rng.uniform(-1, 1, (T, 1)), rng.normal(size=(T, 1)),
                                          np.zeros(1))
        ps.solve(prob, alg)  # untimed: the first touch of the arrays
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sol = ps.solve(prob, alg)
        times.append(time.perf_counter() - t)
    print(json.dumps({"P": 0, "time": float(np.median(times)), "peak": _peak_mib(),
                      "base": base, "its": sol.stats.iterations}))


def _run(cmd: list[str]) -> dict:
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="T = 4e6 instead of 4e7")
    parser.add_argument("--worker", choices=["mpi", "single"], help=argparse.SUPPRESS)
    parser.add_argument("--T", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=["scan", "deer"], default=None,
                        help="only the scan or only DEER (default both)")
    args = parser.parse_args()
    repeats = 3
    if args.worker == "mpi":
        return worker(args.T, repeats, args.kind)
    if args.worker == "single":
        return single(args.T, repeats, args.kind)
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    sizes = {"scan": 4_000_000 if args.quick else 40_000_000,
             "deer": 400_000 if args.quick else 4_000_000}
    for kind in (args.kind,) if args.kind else ("scan", "deer"):
        T = args.T or sizes[kind]
        me = [sys.executable, str(Path(__file__).resolve()), "--T", str(T), "--kind", kind]
        one = _run([*me, "--worker", "single"])
        what = "diagonal D = 1" if kind == "scan" else "shplrnn_3x50 DEER, dense D = 3"
        print(f"\n{kind}: T = {T:.0e}, {what}, float64; one process: {one['time']:.3f} s, "
              f"peak {one['peak']:.0f} MiB ({one['base']:.0f} after imports)"
              + (f", {one['its']} iterations" if kind == "deer" else ""))
        print(f"{'P':>3} {kind + ' s':>8} {'x single':>9} {'peak MiB':>9} {'of single':>10} "
              f"{'over base':>10} {'allgather us':>13}" + (f" {'its':>4}" if kind == "deer"
                                                            else ""))
        for P in (1, 2, 4):
            r = _run([mpiexec, "-n", str(P), *me, "--worker", "mpi"])
            over = (r["peak"] - r["base"]) / max(one["peak"] - one["base"], 1e-9)
            print(f"{P:>3} {r['time']:>8.3f} {r['time'] / one['time']:>9.2f} {r['peak']:>9.0f} "
                  f"{r['peak'] / one['peak']:>10.2f} {over:>10.2f} "
                  f"{1e6 * r['allgather']:>13.1f}" + (f" {r['its']:>4}" if kind == "deer"
                                                       else ""))


if __name__ == "__main__":
    main()
