"""DEER on a nonlinear recurrence whose time axis is split over MPI ranks, and its gradient.

    mpiexec -n 4 python examples/deer_across_ranks.py

The benchmark shPLRNN (D = 3, 50 hidden units) runs T = 10⁶ steps: every rank is given the
global T and solves its quarter. The Newton iterations, the return code and the states equal
those of one process holding everything (which rank 0 also runs here, only to check), and
``sol.vjp`` gives each rank its slice of the cotangents, the parameters' summed over the ranks.
"""

from __future__ import annotations

import time

import numpy as np
from mpi4py import MPI

import pitsolve as ps
from pitsolve.testing import problems

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
bp = problems.shplrnn_3x50(T=1_000_000)

prob = ps.RecurrenceProblem(bp.model, bp.h0, T=bp.T, comm=comm)
ps.solve(ps.RecurrenceProblem(bp.model, bp.h0, T=1000), ps.DEER())  # compile first
comm.Barrier()
t0 = time.perf_counter()
sol = ps.solve(prob, ps.DEER(), fallback="sequential")
comm.Barrier()
elapsed = time.perf_counter() - t0
cot = sol.vjp(np.ones_like(sol.states))  # the gradient of L = sum of all states
lo, hi = sol.rows
slices = comm.gather((lo, hi, sol.states), root=0)
if rank == 0:
    t0 = time.perf_counter()
    ref = ps.solve(ps.RecurrenceProblem(bp.model, bp.h0, T=bp.T), ps.DEER())
    one = time.perf_counter() - t0
    ref_cot = ref.vjp(np.ones_like(ref.states))
    err = max(float(np.abs(s - ref.states[a:b]).max()) for a, b, s in slices)
    grad = max(float(np.abs(cot.params[k] - ref_cot.params[k]).max()
                     / np.abs(ref_cot.params[k]).max()) for k in ref_cot.params)
    print(f"{size} ranks: {sol.retcode.name} in {sol.stats.iterations} Newton iterations, "
          f"{elapsed:.2f} s; one process: {ref.stats.iterations} iterations, {one:.2f} s")
    print(f"largest difference of the states {err:.1e}, of the parameter gradient "
          f"{grad:.1e} (relative)")
