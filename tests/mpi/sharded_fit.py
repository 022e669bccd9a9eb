"""fit on one series split by time over the ranks equals fit on the whole series in one
process (seq_len=None), with adaptive GTF; rank 0 alone writes the checkpoint, and a run
stopped after 2 epochs resumes to the same parameters on the same ranks, on fewer ranks (a
sub-communicator) and in one process. Prints one JSON report from rank 0."""

import json
import os
import sys

import numpy as np
from mpi4py import MPI

import pitsolve as ps

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
tmp = sys.argv[1]
T = 300
x = ps.dsr.systems.lorenz63(T=T, seed=1)


def cut(n_ranks, r):
    bounds = np.linspace(0, T, n_ranks + 1).astype(int)
    bounds[1] = max(bounds[1] - 17, 2)  # uneven
    return int(bounds[r]), int(bounds[r + 1])


def rel(a, b):
    return max(float(np.abs(a[k] - b[k]).max() / max(np.abs(b[k]).max(), 1e-300)) for k in b)


model = ps.models.ShPLRNN(latent=3, hidden=16, seed=4)
kw = dict(forcing=ps.training.GTF(alpha="adaptive", update_every=2), seq_len=None,
          optimizer=ps.training.optim.RAdam(lr=5e-3))
lo, hi = cut(size, rank)
serial = ps.fit(model, x, epochs=4, **kw)
full = ps.fit(model, x[lo:hi], epochs=4, comm=comm, **kw)
report = {"size": size,
          "vs_serial": comm.gather(rel(full.model.params, serial.model.params), root=0),
          "loss_vs_serial": comm.gather(float(np.abs(np.subtract(
              full.loss_history, serial.loss_history)).max()), root=0),
          "alpha_vs_serial": comm.gather(float(np.abs(np.subtract(
              full.alpha_history, serial.alpha_history)).max()), root=0)}

# stopped after 2 epochs (a callback), resumed to 4
path = os.path.join(tmp, "sharded.npz")
stopped = ps.fit(model, x[lo:hi], epochs=4, comm=comm, checkpoint=path,
                 callbacks=[lambda info: info["epoch"] == 2], **kw)
comm.Barrier()
written = comm.gather(sorted(os.listdir(tmp)), root=0)
same = ps.fit(model, x[lo:hi], epochs=4, comm=comm, checkpoint=path + ".same", **kw)
resumed = {}
os.makedirs(os.path.join(tmp, "copies"), exist_ok=True)
for name in ("same", "fewer", "one"):
    if rank == 0:
        dest = os.path.join(tmp, "copies", f"{name}.npz")
        with open(path, "rb") as src, open(dest, "wb") as out:
            out.write(src.read())
    comm.Barrier()
    dest = os.path.join(tmp, "copies", f"{name}.npz")
    if name == "same":
        res = ps.fit(model, x[lo:hi], epochs=4, comm=comm, checkpoint=dest, resume=True, **kw)
        resumed[name] = rel(res.model.params, full.model.params)
    elif name == "fewer":
        n = max(size - 1, 1)
        sub = comm.Split(0 if rank < n else MPI.UNDEFINED, rank)
        if sub != MPI.COMM_NULL:
            a, b = cut(n, rank)
            res = ps.fit(model, x[a:b], epochs=4, comm=sub, checkpoint=dest, resume=True, **kw)
            resumed[name] = rel(res.model.params, full.model.params)
            sub.Free()
        comm.Barrier()
    elif rank == 0:
        res = ps.fit(model, x, epochs=4, checkpoint=dest, resume=True, **kw)
        resumed[name] = rel(res.model.params, full.model.params)
    comm.Barrier()
report.update(stopped=[stopped.epochs, stopped.stopped is not None],
              written=written, resumed=comm.gather(resumed, root=0))
if rank == 0:
    print(json.dumps(report))
sys.stdout.flush()
