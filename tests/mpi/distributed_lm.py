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


def compare(T, cuts, seed):
    """Per backend and structure: the largest relative difference between this rank's part
    of the smoother across ranks (slices at ``cuts``) and the single-process smoother."""
    out = {}
    for name in ("numba", "numpy"):
        be = select(np, name, None)
        for dense in (True, False):
            rng = np.random.default_rng(seed)
            B, D = 2, 3
            F = rng.normal(size=(B, T, D, D)) / 2 if dense else rng.normal(size=(B, T, D))
            c = rng.normal(size=(B, T, D))
            ref = be.lm_smoother(F, c, 0.8)
            lo, hi = cuts[rank], cuts[rank + 1]
            got = be.lm_smoother(np.ascontiguousarray(F[:, lo:hi]),
                                 np.ascontiguousarray(c[:, lo:hi]), 0.8, slices=sl)
            err = np.abs(got - ref[:, lo:hi]).max(initial=0) / np.abs(ref).max()
            out[f"{name}-{dense}"] = float(err)
    return comm.gather(out, root=0)


cuts = {3: [0, 1, 2, 60], 4: [0, 1, 17, 40, 60]}.get(  # one-step slices
    size, list(np.linspace(0, 60, size + 1).astype(int)))
uneven = compare(60, cuts, 1)
# empty parts before the first non-empty one (a converged prefix)
empty = compare(40, [0] * (size - 1) + [40 // 3, 40] if size > 1 else [0, 40], 2)
if rank == 0:
    print(json.dumps({"size": size, "uneven": uneven, "empty_prefix": empty}))
