"""A linear recurrence whose time axis is split over MPI ranks: each rank holds its slice only.

    mpiexec -n 4 python examples/scan_across_ranks.py

Every rank builds its slice of A and b (uneven slices are fine), solves with ParallelScan and
takes the gradient of sum(h) on its slice; rank 0 gathers the slices once, only to compare
them with a single-process solve, and prints the differences.
"""

from __future__ import annotations

import numpy as np
from mpi4py import MPI

import pitsolve as ps

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
T, D = 1_000_000, 4
lo, hi = rank * T // size, (rank + 1) * T // size

# the whole series is drawn on every rank here only so that rank 0 can check the result;
# in an application each rank reads or computes its own slice
rng = np.random.default_rng(0)
A_all, b_all = rng.uniform(-0.99, 0.99, (T, D)), rng.normal(size=(T, D))
A, b = A_all[lo:hi].copy(), b_all[lo:hi].copy()
h0 = np.ones(D) if rank == 0 else None

prob = ps.LinearRecurrenceProblem(A, b, h0, comm=comm)
sol = ps.solve(prob, ps.ParallelScan())
cot = sol.vjp(np.ones_like(sol.states))                 # d sum(h) / d(A, b, h0), per slice
print(f"rank {rank}: steps {sol.rows}, {sol.retcode.name}")

states = comm.gather(sol.states, root=0)
cot_b = comm.gather(cot.b, root=0)
h0_bar = comm.reduce(cot.h0, op=MPI.SUM, root=0)
if rank == 0:
    ref = ps.solve(ps.LinearRecurrenceProblem(A_all, b_all, np.ones(D)), ps.ParallelScan())
    ref_cot = ref.vjp(np.ones((T, D)))
    print(f"{size} ranks: |states - one process| = "
          f"{np.abs(np.concatenate(states) - ref.states).max():.1e}, "
          f"|db - one process| = {np.abs(np.concatenate(cot_b) - ref_cot.b).max():.1e}, "
          f"|dh0 - one process| = {np.abs(h0_bar - ref_cot.h0).max():.1e}")
