"""solve and vjp of a LinearRecurrenceProblem whose time axis is split over the ranks equal
the single-process ones on each rank's slice. Prints one JSON report from rank 0."""

import json

import numpy as np
from mpi4py import MPI

import pitsolve as ps

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
cases = {}
for structure in ("diagonal", "dense"):
    for alg in (ps.ParallelScan(), ps.Sequential(), ps.ParallelScan(backend="numpy")):
        rng = np.random.default_rng(5)
        T, D = 50, 3
        shape = (2, T, D, D) if structure == "dense" else (2, T, D)
        A = rng.uniform(-1, 1, shape) / (np.sqrt(D) if structure == "dense" else 1)
        b, h0 = rng.normal(size=(2, T, D)), rng.normal(size=(2, D))
        g = rng.normal(size=(2, T, D))
        ref = ps.solve(ps.LinearRecurrenceProblem(A, b, h0), alg)
        ref_cot = ref.vjp(g)
        cuts = np.concatenate([[0], np.sort(rng.choice(np.arange(1, T), size - 1,
                                                       replace=False)), [T]])  # uneven
        lo, hi = int(cuts[rank]), int(cuts[rank + 1])
        prob = ps.LinearRecurrenceProblem(A[:, lo:hi], b[:, lo:hi], h0 if rank == 0 else None,
                                          comm=comm)
        sol = ps.solve(prob, alg)
        cot = sol.vjp(g[:, lo:hi])
        h0_sum = comm.allreduce(cot.h0, op=MPI.SUM)
        errs = {
            "rows": list(sol.rows) == [lo, hi],
            "retcode": str(sol.retcode.name),
            "states": float(np.abs(sol.states - ref.states[:, lo:hi]).max()),
            "b": float(np.abs(cot.b - ref_cot.b[:, lo:hi]).max()),
            "A": float(np.abs(cot.A - ref_cot.A[:, lo:hi]).max()),
            "h0": float(np.abs(h0_sum - ref_cot.h0).max()),
        }
        gathered = comm.gather(errs, root=0)
        if rank == 0:
            cases[f"{structure}-{alg!r}"] = gathered
try:  # a slice of another width on the last rank: the same error everywhere
    D = 4 if rank == size - 1 and size > 1 else 3
    ps.LinearRecurrenceProblem(np.ones((2, D)), np.ones((2, D)), np.zeros(D), comm=comm)
    error = None
except ValueError as exc:
    error = str(exc).split(":")[0]
errors = comm.gather(error, root=0)
if rank == 0:
    print(json.dumps({"size": size, "cases": cases, "errors": errors}))
