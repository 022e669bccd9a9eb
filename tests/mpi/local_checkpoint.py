"""Run under ``mpiexec -n R`` with a directory: checkpoints of local training on the MPI engine.

For each ``sync``: an uninterrupted run on the serial engine (every rank alone, its own file),
an uninterrupted MPI run, and an MPI run stopped by a callback after 3 epochs (checkpointed
every 2, so the file holds epoch 2) and resumed to 4. Rank 0 prints one JSON line with, per
case, the largest differences between their final checkpoints and results.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI

import pitsolve as ps


class Scores:
    """Validation scores by epoch (``start``: the epoch a resumed run begins after)."""

    table = (3.0, 1.0, float("nan"), 2.0)

    def __init__(self, start=0):
        self.epoch = start

    def __call__(self, model):
        self.epoch += 1
        return self.table[self.epoch - 1]


def run(data, path, engine, sync, mu=0.5, start=0, **kw):
    alg = ps.Schwarz(windows=4, overlap=8, inner=ps.DEER(), engine=engine)
    return ps.fit(ps.models.ShPLRNN(3, 8, seed=5), data, solver=alg, seq_len=None,
                  objective=ps.training.LocalObjective(mu=mu, sync=sync),
                  forcing=ps.GTF(alpha="adaptive", update_every=2),
                  optimizer=ps.optim.Adam(lr=1e-2), steps_per_epoch=2, epochs=4,
                  checkpoint=path, validate=Scores(start), **kw)


def compare(a, b):
    """Largest |difference| over the arrays of two checkpoints, and whether the metadata
    agree (the wall times aside; exactly, but for the reductions over windows)."""
    (arrays_a, meta_a), (arrays_b, meta_b) = (ps.training.load_checkpoint(x) for x in (a, b))
    if sorted(arrays_a) != sorted(arrays_b):
        return float("inf"), False
    diff = max(float(np.abs(arrays_a[k] - arrays_b[k]).max(initial=0.0)) for k in arrays_a)
    for meta in (meta_a, meta_b):
        for s in meta["stats"]:
            del s["wall_time"]
    reduced = ("loss_history", "alpha_history", "alpha")  # sums over ranks: to rounding
    histories = all(np.allclose(meta_a[k], meta_b[k], rtol=1e-12, atol=0.0) for k in reduced)
    rest = {k: v for k, v in meta_a.items() if k not in reduced}
    return diff, histories and rest == {k: meta_b[k] for k in rest}


def main() -> None:
    comm = MPI.COMM_WORLD
    directory = Path(sys.argv[1])
    data = ps.dsr.lorenz63(T=400, dt=0.01, seed=1)
    cases = {}
    for sync in ("allreduce", "neighbour"):
        serial = directory / f"{sync}-serial-{comm.rank}.npz"
        full, part = directory / f"{sync}-mpi-full.npz", directory / f"{sync}-mpi.npz"
        ref = run(data, serial, "serial", sync)
        run(data, full, "mpi", sync)
        stopped = run(data, part, "mpi", sync, checkpoint_every=2,
                      callbacks=[lambda info: info["epoch"] == 3])
        comm.Barrier()
        epoch = ps.training.load_checkpoint(part)[1]["epoch"] if comm.rank == 0 else None
        try:
            run(data, part, "mpi", sync, mu=1.0, start=2, resume=True)
            refused = False
        except ValueError as exc:
            refused = "mu=0.5 in the checkpoint but 1.0 now" in str(exc)
        resumed = run(data, part, "mpi", sync, start=2, resume=True)
        comm.Barrier()
        mine = resumed.model.params.flatten()
        models = comm.gather(mine)
        if comm.rank == 0:
            vs_mpi, meta_mpi = compare(full, part)
            vs_serial, meta_serial = compare(serial, part)
            cases[sync] = {
                "stopped_epochs": stopped.epochs,
                "checkpoint_epoch": epoch,
                "resumed_epochs": resumed.epochs,
                "resumed_vs_mpi": vs_mpi,
                "meta_vs_mpi": meta_mpi,
                "resumed_vs_serial": vs_serial,
                "meta_vs_serial": meta_serial,
                "model_vs_serial": float(np.abs(mine - ref.model.params.flatten()).max()),
                "best": [resumed.best_epoch, ref.best_epoch],
                "ranks_agree": float(max(np.abs(m - mine).max() for m in models)),
            }
        refused_all = comm.gather(refused)
        if comm.rank == 0:
            cases[sync]["refused"] = refused_all
    if comm.rank == 0:
        print(json.dumps({"size": comm.size, "cases": cases}))


if __name__ == "__main__":
    main()
