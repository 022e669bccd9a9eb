"""The scan with its time axis split over MPI ranks (issue 14): per-rank memory and time
against one process holding everything, and a projection to many ranks.

Usage::

    python benchmarks/distributed.py            # T = 4e7 (diagonal, D = 1, float64)
    python benchmarks/distributed.py --quick    # T = 4e6

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
    projection).

Projection (docs/benchmarks.md): one distributed scan costs
``t(P) ≈ 2.5 · c · T / P + α(P)``, with ``c`` the measured per-step time of the local
scan (two local scans and the chain product, ~2.5 passes) and ``α(P) ≈ α₀ log₂ P`` the
allgather of P summaries of O(D²) bytes (measured α₀ here, between processes of one
machine; on a cluster use the interconnect's latency). The machine here has 2 cores, so
P = 4 is oversubscribed and its times are an upper bound.
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


def worker(T: int, repeats: int) -> None:
    from mpi4py import MPI

    import pitsolve as ps

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    lo, hi = rank * T // size, (rank + 1) * T // size
    rng = np.random.default_rng(rank)
    A = rng.uniform(-1, 1, (hi - lo, 1))
    b = rng.normal(size=(hi - lo, 1))
    prob = ps.LinearRecurrenceProblem(A, b, np.zeros(1) if rank == 0 else None, comm=comm)
    ps.solve(prob, ps.ParallelScan())  # compile
    times = []
    for _ in range(repeats):
        comm.Barrier()
        t = time.perf_counter()
        ps.solve(prob, ps.ParallelScan())
        comm.Barrier()
        times.append(time.perf_counter() - t)
    summary = (np.ones((1,)), np.ones((1,)))
    comm.Barrier()
    t = time.perf_counter()
    for _ in range(100):
        comm.allgather(summary)
    latency = (time.perf_counter() - t) / 100
    peaks = comm.gather(_peak_mib(), root=0)
    if rank == 0:
        print(json.dumps({"P": size, "time": float(np.median(times)), "peak": max(peaks),
                          "allgather": latency}))


def single(T: int, repeats: int) -> None:
    import pitsolve as ps

    rng = np.random.default_rng(0)
    prob = ps.LinearRecurrenceProblem(rng.uniform(-1, 1, (T, 1)), rng.normal(size=(T, 1)),
                                      np.zeros(1))
    ps.solve(prob, ps.ParallelScan())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        ps.solve(prob, ps.ParallelScan())
        times.append(time.perf_counter() - t)
    print(json.dumps({"P": 0, "time": float(np.median(times)), "peak": _peak_mib()}))


def _run(cmd: list[str]) -> dict:
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="T = 4e6 instead of 4e7")
    parser.add_argument("--worker", choices=["mpi", "single"], help=argparse.SUPPRESS)
    parser.add_argument("--T", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    T = args.T or (4_000_000 if args.quick else 40_000_000)
    repeats = 3
    if args.worker == "mpi":
        return worker(T, repeats)
    if args.worker == "single":
        return single(T, repeats)
    me = [sys.executable, str(Path(__file__).resolve()), "--T", str(T)]
    mpiexec = str(Path(sys.executable).parent / "mpiexec")
    base = _run([*me, "--worker", "single"])
    print(f"T = {T:.0e}, diagonal D = 1, float64; one process: {base['time']:.3f} s, "
          f"peak {base['peak']:.0f} MiB")
    print(f"{'P':>3} {'scan s':>8} {'x single':>9} {'peak MiB':>9} {'of single':>10} "
          f"{'allgather us':>13}")
    for P in (1, 2, 4):
        r = _run([mpiexec, "-n", str(P), *me, "--worker", "mpi"])
        print(f"{P:>3} {r['time']:>8.3f} {r['time'] / base['time']:>9.2f} {r['peak']:>9.0f} "
              f"{r['peak'] / base['peak']:>10.2f} {1e6 * r['allgather']:>13.1f}")


if __name__ == "__main__":
    main()
