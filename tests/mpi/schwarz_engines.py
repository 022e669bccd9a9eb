"""Run under ``mpiexec -n R``: the MPI engine against the serial engine, on every rank.

Prints one JSON line on rank 0 with the largest difference per case. ``fail`` as the first
argument makes rank 1 raise inside a local solve instead.
"""

from __future__ import annotations

import json
import sys

import numpy as np
from mpi4py import MPI

import pitsolve as ps
from pitsolve.testing import problems
from pitsolve.training.local import LocalTraining


class Exploding(ps.models.ShPLRNN):
    """Raises in the local solve of MPI rank 1 (to test that the job aborts)."""

    def sequential(self, h0, inputs, T):
        if MPI.COMM_WORLD.rank == 1:
            raise RuntimeError("deliberate failure on rank 1")
        return super().sequential(h0, inputs, T)


def main() -> None:
    comm = MPI.COMM_WORLD
    tol = {"rtol": 1e-10, "atol": 1e-12}
    if sys.argv[1:] == ["fail"]:
        base = problems.shplrnn_3x50(T=1000).model
        model = Exploding.from_params(dict(base.params.items()))
        prob = ps.RecurrenceProblem(model, np.zeros(3), T=1000)
        ps.solve(prob, ps.Schwarz(windows=comm.size, overlap=20, engine="mpi"))
        return
    cases = {}
    gru = problems.gru_64(T=900)
    rng = np.random.default_rng(0)
    h0 = np.broadcast_to(gru.h0, (2, 64)) + 0.1 * rng.normal(size=(2, 64))
    batch = ps.RecurrenceProblem(gru.model, h0, inputs=np.stack([gru.inputs] * 2))
    configs = {
        "shplrnn/sequential/P=R": (
            problems.shplrnn_3x50(T=3000).problem(),
            comm.size,
            80,
            ps.Sequential(),
        ),
        "shplrnn/deer/P=7": (problems.shplrnn_3x50(T=3000).problem(), 7, 80, ps.DEER()),
        "gru-batch/nk/P=5": (batch, 5, 40, ps.NewtonKrylov()),
        "elman-slow/sequential/P=9": (None, 9, 3, ps.Sequential()),
    }
    for name, (prob, P, overlap, inner) in configs.items():
        if prob is None:
            rs = np.random.default_rng(3)
            W = rs.normal(size=(4, 4))
            W *= 0.97 / np.linalg.norm(W, 2)
            m = ps.models.Elman(
                4, 1, params={"W": W, "U": rs.normal(size=(4, 1)), "b": np.zeros(4)}
            )
            prob = ps.RecurrenceProblem(m, np.ones(4), inputs=rs.normal(size=(450, 1)))
        serial = ps.solve(prob, ps.Schwarz(windows=P, overlap=overlap, inner=inner), **tol)
        mpi = ps.solve(
            prob, ps.Schwarz(windows=P, overlap=overlap, inner=inner, engine="mpi"), **tol
        )
        local = ps.solve(
            prob,
            ps.Schwarz(windows=P, overlap=overlap, inner=inner, engine="mpi", gather="local"),
            **tol,
        )
        lo, hi = local.stats["schwarz"]["rows"]
        seq = ps.solve(prob, ps.Sequential()).states
        cases[name] = {
            "mpi_vs_serial": float(np.abs(mpi.states - serial.states).max()),
            "local_vs_serial": float(np.abs(local.states - serial.states[..., lo:hi, :]).max()),
            "vs_sequential": float(np.abs(mpi.states - seq).max()),
            "retcodes": [serial.retcode.name, mpi.retcode.name, local.retcode.name],
            "sweeps": [serial.stats["schwarz"]["sweeps"], mpi.stats["schwarz"]["sweeps"]],
            "bytes": [
                serial.stats["schwarz"]["bytes_exchanged"],
                mpi.stats["schwarz"]["bytes_exchanged"],
            ],
            "rows": comm.gather((lo, hi)),
        }
    data = ps.dsr.lorenz63(T=400, dt=0.01, seed=1)
    for sync in ("allreduce", "neighbour"):
        params = []
        for engine in ("serial", "mpi"):
            alg = ps.Schwarz(windows=max(4, comm.size), overlap=8, engine=engine)
            tr = LocalTraining(ps.models.ShPLRNN(3, 8, seed=5), data, ps.GTF(alpha=0.3), alg,
                               ps.optim.Adam(lr=1e-2), {},
                               objective=ps.training.LocalObjective(mu=0.5, sync=sync))
            for _ in range(4):
                tr.step()
            params.append(tr.model().params.flatten())
        diff = float(np.abs(params[0] - params[1]).max())
        cases[f"local-training/{sync}"] = {"mpi_vs_serial": diff, "local_vs_serial": 0.0,
                                            "vs_sequential": 0.0, "retcodes": ["Success"] * 3,
                                            "sweeps": [0, 0], "rows": [[0, 1]]}
    if comm.rank == 0:
        print(json.dumps({"size": comm.size, "cases": cases}))


if __name__ == "__main__":
    main()
