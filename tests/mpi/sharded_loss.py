"""loss_and_grad on one series split by time over the ranks (uneven slices, down to one step)
equals the single-process loss and gradient, for GTF, STF and an observation model, with
DEER and Sequential; adaptive GTF's α is the same on every rank and equals the single-process
estimate. Prints one JSON report from rank 0."""

import json
import sys

import numpy as np
from mpi4py import MPI

import pitsolve as ps
from pitsolve.parallel.slices import TimeSlices
from pitsolve.training.forcing import estimate_alpha

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
T = 240
x = ps.dsr.systems.lorenz63(T=T, seed=1)
x = (x - x.mean(0)) / x.std(0)
cuts = np.concatenate([[0, 2], np.sort(np.random.default_rng(0).choice(
    np.arange(3, T), size - 2, replace=False)), [T]]) if size > 1 else np.array([0, T])
if size > 2:
    cuts[2] = 3  # rank 1 holds one step
lo, hi = int(cuts[rank]), int(cuts[rank + 1])


def rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


latent = ps.models.ShPLRNN(latent=3, hidden=12, seed=2)
observed = ps.models.ObservedModel(ps.models.ShPLRNN(latent=4, hidden=12, seed=2),
                                   ps.models.Affine.init(3, 4, seed=3))
cases = {
    "gtf-deer": (latent, dict(forcing=ps.training.GTF(alpha=0.3))),
    "stf-deer": (latent, dict(forcing=ps.training.STF(interval=7))),
    "gtf-sequential": (latent, dict(forcing=ps.training.GTF(alpha=0.3),
                                    solver=ps.Sequential())),
    "gtf-diagonal": (latent, dict(forcing=ps.training.GTF(alpha=0.5),
                                  solver=ps.DEER(jacobian="diagonal"))),
    "observed": (observed, dict(forcing=ps.training.GTF(alpha=0.3),
                                regularization=ps.training.Regularization(latent=0.1,
                                                                          observation=0.2))),
}
report = {"size": size, "rows": comm.gather([lo, hi], root=0), "cases": {}}
for name, (model, kw) in cases.items():
    L_ref, g_ref = ps.training.loss_and_grad(model, x, **kw)
    L, g = ps.training.loss_and_grad(model, x[lo:hi], comm=comm, **kw)
    errs = {"loss": abs(L - L_ref) / abs(L_ref),
            "grad": max(rel(g[k], g_ref[k]) for k in g_ref),
            "same_on_ranks": len(set(comm.allgather(
                (L, *(float(v.sum()) for v in g.values()))))) == 1}
    got = comm.gather(errs, root=0)
    if rank == 0:
        report["cases"][name] = got
for est in ("product", "mean", "max"):
    forcing = ps.training.GTF(alpha="adaptive", estimator=est)
    ref = estimate_alpha(latent, x, forcing, 0.0)
    got = estimate_alpha(latent, x[lo:hi], forcing, 0.0, TimeSlices(comm))
    errs = comm.gather(abs(got - ref), root=0)
    if rank == 0:
        report["cases"][f"alpha-{est}"] = errs
if rank == 0:
    print(json.dumps(report))
sys.stdout.flush()
