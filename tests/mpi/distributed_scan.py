"""The scan across ranks equals the single-process scan, for uneven slices (down to one
step), diagonal and dense, forward and transposed, with batch axes; bad slices raise the same
error on every rank. Prints one JSON report from rank 0."""

import json
import sys

import numpy as np
from _cuts import uneven
from mpi4py import MPI

from pitsolve.kernels import affine_scan, affine_scan_transpose
from pitsolve.kernels.distributed import scan_distributed, scan_transpose_distributed

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
report = {"size": size, "cases": {}}


for dense in (False, True):
    for kernel in ("numba", "numpy"):
        for T, batch in ((37, ()), (1000, (2,)), (size, (3,))):
            rng = np.random.default_rng(T)
            D = 3
            shape = (*batch, T, D, D) if dense else (*batch, T, D)
            A = rng.uniform(-1, 1, shape) / (np.sqrt(D) if dense else 1)
            b = rng.normal(size=(*batch, T, D))
            h0 = rng.normal(size=(*batch, D))
            lo, hi = uneven(T, size, T)[rank : rank + 2]
            sl = (..., slice(lo, hi), slice(None), slice(None)) if dense else \
                (..., slice(lo, hi), slice(None))
            bsl = (..., slice(lo, hi), slice(None))
            ref = affine_scan(A, b, h0)
            got = scan_distributed(A[sl].copy(), b[bsl].copy(), h0 if rank == 0 else None,
                                   comm, kernel=kernel)
            err = float(np.abs(got - ref[bsl]).max() / np.abs(ref).max())
            lam_ref, h0bar_ref = affine_scan_transpose(A, b)
            lam, h0bar = scan_transpose_distributed(A[sl].copy(), b[bsl].copy(), comm,
                                                    kernel=kernel)
            err_t = float(np.abs(lam - lam_ref[bsl]).max() / np.abs(lam_ref).max())
            err_h0 = float(np.abs(h0bar - h0bar_ref).max()) if rank == 0 else 0.0
            errs = comm.gather((err, err_t, err_h0, h0bar is None), root=0)
            if rank == 0:
                name = f"{'dense' if dense else 'diag'}-{kernel}-T{T}-B{batch}"
                report["cases"][name] = {
                    "forward": max(e[0] for e in errs), "transpose": max(e[1] for e in errs),
                    "h0": errs[0][2], "others_none": all(e[3] for e in errs[1:]),
                }

# bad slices: every rank raises the same ValueError (no deadlock)
errors = {}
for case in ("empty", "width"):
    n = 0 if (case == "empty" and rank == size - 1) else 2
    D = 4 if (case == "width" and rank == size - 1 and size > 1) else 3
    try:
        scan_distributed(np.ones((n, D)), np.ones((n, D)), np.zeros(D), comm)
        errors[case] = None
    except ValueError as exc:
        errors[case] = str(exc).split(":")[0]
report["errors"] = comm.gather(errors, root=0)
if rank == 0:
    print(json.dumps(report))
sys.stdout.flush()
