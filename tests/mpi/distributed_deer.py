"""DEER (full, diagonal, Picard, line search) and Sequential on a RecurrenceProblem whose time
axis is split over the ranks equal the single-process solve on each rank's slice: the same
iterations and return code on every rank, states to the solver's tolerance, vjp (parameters
summed over ranks) to 1e-10; fallback and throw as in one process; bad input is the same
ValueError on every rank. Prints one JSON report from rank 0."""

import json
import sys

import numpy as np
from _cuts import uneven
from mpi4py import MPI

import pitsolve as ps
from pitsolve.testing import problems

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
report = {"size": size, "cases": {}, "errors": {}}


def rel(a, b):
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-300))


plrnn = problems.shplrnn_3x50(T=300)
chaotic = problems.chaotic_clipped_3x50(T=300)
elman = problems.elman_memory(T=240)
cases = [
    ("plrnn-full", plrnn, ps.DEER(), {}),
    ("plrnn-diagonal", plrnn, ps.DEER(jacobian="diagonal"), {}),
    ("plrnn-linesearch", plrnn, ps.DEER(damping=ps.LineSearch()), {}),
    ("plrnn-picard", plrnn, ps.DEER(jacobian="none"), {}),
    ("plrnn-sequential", plrnn, ps.Sequential(), {}),
    ("elman-full", elman, ps.DEER(), {}),
    ("elman-numpy", elman, ps.DEER(backend="numpy"), {}),
    ("elman-sequential-numpy", elman, ps.Sequential(backend="numpy"), {}),
    ("plrnn-krylov", plrnn, ps.NewtonKrylov(), {}),
    ("elman-krylov", elman, ps.NewtonKrylov(preconditioner="none"), {}),
    ("plrnn-lm", plrnn, ps.DEER(damping=ps.LevenbergMarquardt()), {}),
    ("elman-lm", elman, ps.DEER(damping=ps.LevenbergMarquardt(lam=10.0)), {}),
    ("chaotic-lm", chaotic, ps.DEER(damping=ps.LevenbergMarquardt()), {"maxiter": 40}),
    ("chaotic-linesearch", chaotic, ps.DEER(damping=ps.LineSearch()), {}),  # fails: Stalled
]
for name, bp, alg, controls in cases:
    model, h0, x, T = bp.model, bp.h0, bp.inputs, bp.T
    h0 = np.stack([h0, 0.5 * h0])  # a batch of two
    x = None if x is None else np.stack([x, -x])
    ref = ps.solve(ps.RecurrenceProblem(model, h0, x, T=T), alg, **controls)
    if x is None:  # the global T, split evenly
        prob = ps.RecurrenceProblem(model, h0 if rank == 0 else None, T=T, comm=comm)
    else:  # uneven slices of the inputs, down to one step
        lo, hi = uneven(T, size, 3)[rank : rank + 2]
        prob = ps.RecurrenceProblem(model, h0 if rank == 0 else None, x[:, lo:hi], comm=comm)
    sol = ps.solve(prob, alg, **controls)
    lo, hi = sol.rows
    mine = {
        "rows": [int(lo), int(hi)],
        "retcode": sol.retcode.name, "ref_retcode": ref.retcode.name,
        "iterations": [sol.stats.iterations, ref.stats.iterations],
        "states": rel(sol.states, ref.states[:, lo:hi]),
    }
    if ps.is_successful(ref):
        g = np.cos(np.arange(h0.shape[0] * T * h0.shape[-1])).reshape(h0.shape[0], T, -1)
        cref, cot = ref.vjp(g), sol.vjp(g[:, lo:hi])
        mine.update(
            params=max(rel(cot.params[k], cref.params[k]) for k in cref.params),
            h0=rel(comm.allreduce(cot.h0, op=MPI.SUM), cref.h0),
            inputs=0.0 if x is None else rel(cot.inputs, cref.inputs[:, lo:hi]))
    got = comm.gather(mine, root=0)
    if rank == 0:
        report["cases"][name] = got

# fallback: DEER stopped by maxiter falls back to the pipelined sequential pass; throw raises
model, h0 = plrnn.model, plrnn.h0
ref = ps.solve(ps.RecurrenceProblem(model, h0, T=300), ps.Sequential())
prob = ps.RecurrenceProblem(model, h0, T=300, comm=comm)
sol = ps.solve(prob, ps.DEER(jacobian="diagonal"), maxiter=2, fallback="sequential")
lo, hi = sol.rows
fb = {"retcode": sol.retcode.name, "fallback": sol.stats.extra.get("fallback", {}).get("retcode"),
      "states": rel(sol.states, ref.states[lo:hi])}
try:
    ps.solve(prob, ps.DEER(jacobian="diagonal"), maxiter=2, throw=True)
    fb["throw"] = None
except ps.SolverError as exc:
    fb["throw"] = exc.solution.retcode.name
# the callback asks to stop on one rank only: every rank stops
sol = ps.solve(prob, ps.DEER(jacobian="diagonal"),
               callback=lambda s: rank == size - 1 and s.stats.iterations >= 2)
fb["callback"] = [sol.retcode.name, sol.stats.iterations]
fb["h_init"] = ps.solve(prob, ps.DEER(), h_init=ref.states[lo:hi]).stats.iterations
report["fallback"] = comm.gather(fb, root=0)

# bad input: the same ValueError on every rank, never a deadlock
bad = {
    "width": lambda: ps.RecurrenceProblem(
        elman.model, elman.h0, np.ones((2, 3 if rank == size - 1 and size > 1 else 1)),
        comm=comm),
    "empty": lambda: ps.RecurrenceProblem(
        elman.model, elman.h0, np.ones((0 if rank == size - 1 else 2, 1)), comm=comm),
    "short": lambda: ps.RecurrenceProblem(model, h0, T=max(size - 1, 0), comm=comm),
    "window": lambda: ps.solve(prob, ps.NewtonKrylov(window=max(1, 300 // size // 2))),
}
for case, build in bad.items():
    try:
        build()
        report["errors"][case] = None
    except (ValueError, TypeError) as exc:
        report["errors"][case] = str(exc)
report["errors"] = comm.gather(report["errors"], root=0)
if rank == 0:
    print(json.dumps(report))
sys.stdout.flush()
