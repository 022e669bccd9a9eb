"""A rank that fails in the middle of a solve on a time axis split over ranks ends the job.

``tests/mpi/distributed_faults.py`` at 3 ranks: rank 1 raises, or is SIGKILLed, in the second
Newton iteration of a DEER solve while ranks 0 and 2 wait for it in a collective. The job
must end (non-zero exit status) within seconds, not hang until the subprocess timeout.
The times from the fault to the end of ``mpiexec`` are printed (``pytest -s``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_mpi import mpirun

pytestmark = pytest.mark.mpi

# the subprocess: a hang fails the test with TimeoutExpired; generous, for a cold numba cache
# (the script compiles the kernels in a first solve, before the one that fails)
TIMEOUT = 300
BOUND = 30  # seconds from the start of the solve that fails to the end of the job


def stamp(text: str, what: str) -> float:
    """The ``time.time()`` the script wrote after ``what``."""
    found = re.search(rf"^{what} at (\d+\.\d+)$", text, re.MULTILINE)
    assert found, f"no '{what} at' line in:\n{text[-3000:]}"
    return float(found.group(1))


def run_fault(mode: str):
    out = mpirun("distributed_faults.py", 3, mode, timeout=TIMEOUT)
    end = time.time()
    start, fault = stamp(out.stdout, "solve starts"), stamp(out.stderr, "fault")
    print(f"\n{mode}: job ended {end - fault:.2f} s after the fault, {end - start:.2f} s after "
          f"the solve started; exit status {out.returncode}")
    assert out.returncode != 0, out.stderr[-3000:]
    assert "ok" not in out.stdout.splitlines()
    assert end - start < BOUND, (end - start, out.stderr[-3000:])
    return out


def test_the_control_solve_passes_the_fault_point_and_succeeds():
    """Without a fault the same solve succeeds; rank 1 linearises more than twice, so the
    faults below happen mid-solve (the second of its linearisations)."""
    out = mpirun("distributed_faults.py", 3, "ok", timeout=TIMEOUT)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert lines[-2] == "ok"
    report = json.loads(lines[-1])
    assert [r["retcode"] for r in report] == ["Success"] * 3
    assert report[1]["calls"] > 2 and report[1]["iterations"] > 2


def test_an_exception_on_one_rank_aborts_the_job_with_its_traceback():
    out = run_fault("raise")
    assert "MPI rank 1 of 3 failed" in out.stderr
    assert "RuntimeError: deliberate failure on rank 1" in out.stderr  # the traceback


def test_a_killed_rank_ends_the_job():
    """Hydra (MPICH's mpiexec) ends the other ranks when one dies by a signal (its default;
    ``-disable-auto-cleanup`` would leave them waiting)."""
    out = run_fault("kill")
    assert out.returncode == 9  # hydra's exit status: the signal that killed the rank
    assert "Killed (signal 9)" in out.stdout + out.stderr


RETURNING_ABORT = """
from pitsolve.parallel.slices import abort_on_error


class Comm:  # Abort returns, as MPICH's MPI_Abort can
    def Get_size(self):
        return 3

    def Get_rank(self):
        return 1

    def Abort(self, code):
        print("aborting", flush=True)


with abort_on_error(Comm()):
    raise RuntimeError("deliberate failure on rank 1")
print("the rank carried on after the abort", flush=True)
"""


def test_a_failed_rank_does_not_carry_on_even_if_abort_returns():
    """MPICH 5.0.2's ``MPI_Abort`` asks hydra to kill the job and can return before the
    kill arrives: the failed rank must then not run on as if nothing had failed (the error
    is not swallowed)."""
    out = subprocess.run([sys.executable, "-c", RETURNING_ABORT], capture_output=True,
                         text=True, timeout=60, cwd=Path(__file__).parents[1])
    assert "aborting" in out.stdout and "MPI rank 1 of 3 failed" in out.stderr
    assert "carried on" not in out.stdout
    assert out.returncode != 0
