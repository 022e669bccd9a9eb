"""The Levenberg–Marquardt Kalman smoother on a time axis split over the ranks equals the
single-process smoother: uneven slices down to one step, and an empty prefix of ranks (a
converged prefix); dense and diagonal, compiled (Numba) and array (NumPy) covariances. Prints
one JSON report from rank 0."""

import json

import numpy as np
from mpi4py import MPI

from pitsolve.backends import select
from pitsolve.parallel import TimeSlices

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
sl = TimeSlices(comm)
out = {}
for name in ("numba", "numpy"):
    be = select(np, name, None)
    for dense in (True, False):
        rng = np.random.default_rng(1)
        B, T, D = 2, 60, 3
        F = rng.normal(size=(B, T, D, D)) / 2 if dense else rng.normal(size=(B, T, D))
        c = rng.normal(size=(B, T, D))
        ref = be.lm_smoother(F, c, 0.8)
        cuts = [0, 1, 17, 40, 60] if size == 4 else list(np.linspace(0, T, size + 1).astype(int))
        if size == 3:
            cuts = [0, 1, 2, 60]  # one-step slices
        lo, hi = cuts[rank], cuts[rank + 1]
        got = be.lm_smoother(np.ascontiguousarray(F[:, lo:hi]),
                             np.ascontiguousarray(c[:, lo:hi]), 0.8, slices=sl)
        out[f"{name}-{dense}"] = float(np.abs(got - ref[:, lo:hi]).max() / np.abs(ref).max())
uneven = comm.gather(out, root=0)
# empty parts before the first non-empty one (a converged prefix)
out = {}
for name in ("numba", "numpy"):
    be = select(np, name, None)
    for dense in (True, False):
        rng = np.random.default_rng(2)
        B, T, D = 2, 40, 3
        F = rng.normal(size=(B, T, D, D)) / 2 if dense else rng.normal(size=(B, T, D))
        c = rng.normal(size=(B, T, D))
        ref = be.lm_smoother(F, c, 0.8)
        cuts = [0] * (size - 1) + [T // 3, T] if size > 1 else [0, T]
        lo, hi = cuts[rank], cuts[rank + 1]
        got = be.lm_smoother(np.ascontiguousarray(F[:, lo:hi]),
                             np.ascontiguousarray(c[:, lo:hi]), 0.8, slices=sl)
        err = float(np.abs(got - ref[:, lo:hi]).max(initial=0) / np.abs(ref).max())
        out[f"{name}-{dense}"] = err
empty = comm.gather(out, root=0)
if rank == 0:
    print(json.dumps({"size": size, "uneven": uneven, "empty_prefix": empty}))
