"""A rank that fails in the middle of a DEER solve on a time axis split over the ranks.

``python distributed_faults.py MODE`` under ``mpiexec -n 3``: the shPLRNN (T = 300, the
global T split evenly) solved by ``DEER()``, its model wrapped so that rank 1 fails in its
second linearisation (``f_and_jacobian``, the second Newton iteration), while the other
ranks wait for it in the residual test's collective:

- ``raise``: rank 1 raises ``RuntimeError("deliberate failure on rank 1")``: ``solve``'s
  ``abort_on_error`` prints the traceback and ends the job (``comm.Abort``);
- ``kill``: rank 1 sends itself SIGKILL: the process manager (hydra) ends the job;
- ``ok``: no fault (the control): rank 0 prints ``ok`` and a JSON report (rank 1's
  linearisations and the iterations), which shows that the fault point lies mid-solve.

A first solve without faults compiles the kernels (a cold numba cache takes a minute or
more); rank 0 then writes ``solve starts at <time.time()>`` to stdout, and rank 1
``fault at <time.time()>`` to stderr just before its fault, for the time to detection.
"""

import json
import os
import signal
import sys
import time

from mpi4py import MPI

import pitsolve as ps
from pitsolve.testing import problems

comm = MPI.COMM_WORLD
rank, size = comm.Get_rank(), comm.Get_size()
mode = sys.argv[1]
if mode not in ("raise", "kill", "ok"):
    raise SystemExit(f"mode must be raise, kill or ok, got {mode!r}")
FAULTY_RANK, FAULTY_CALL = 1, 2


class Calls:
    """The linearisations of this rank, shared by a wrapper and the models derived from it;
    the fault only once ``armed``."""

    n = 0
    armed = False


class Faulty:
    """A duck-typed wrapper of a model: every attribute is the model's, except that
    ``f_and_jacobian`` counts its calls and, on ``FAULTY_RANK`` at call ``FAULTY_CALL``,
    fails as ``mode`` says. ``on`` and ``astype`` (which ``solve`` uses to bind the model to
    a backend and to the problem's precision) wrap their result, so the model DEER
    linearises is still a wrapper."""

    def __init__(self, model, calls):
        self._model, self._calls = model, calls

    def __getattr__(self, name):
        return getattr(self._model, name)

    def on(self, backend):
        return Faulty(backend.bind(self._model), self._calls)

    def astype(self, dtype):
        return Faulty(self._model.astype(dtype), self._calls)

    def f_and_jacobian(self, h, x):
        calls = self._calls
        calls.n += 1
        if calls.armed and rank == FAULTY_RANK and calls.n == FAULTY_CALL and mode != "ok":
            sys.stderr.write(f"fault at {time.time():.6f}\n")
            sys.stderr.flush()
            if mode == "raise":
                raise RuntimeError(f"deliberate failure on rank {rank}")
            os.kill(os.getpid(), signal.SIGKILL)
        return self._model.f_and_jacobian(h, x)


bp = problems.shplrnn_3x50(T=300)
model = Faulty(bp.model, Calls())
prob = ps.RecurrenceProblem(model, bp.h0 if rank == 0 else None, T=bp.T, comm=comm)
ps.solve(prob, ps.DEER())  # compiles the kernels
model._calls.n, model._calls.armed = 0, True
comm.Barrier()
if rank == 0:
    print(f"solve starts at {time.time():.6f}", flush=True)
sol = ps.solve(prob, ps.DEER())
report = comm.gather({"calls": model._calls.n, "iterations": sol.stats.iterations,
                      "retcode": sol.retcode.name}, root=0)
if rank == 0:
    print("ok")
    print(json.dumps(report))
sys.stdout.flush()
