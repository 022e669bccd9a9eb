"""The MPI engine gives the serial engine's numbers, at 1–4 ranks; a failing rank ends the job.

Each test launches the venv's ``mpiexec`` (the ``mpich`` wheel) on a script under
``tests/mpi/`` with a timeout, so a deadlock fails the test instead of hanging the suite.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.mpi

SCRIPTS = Path(__file__).parent / "mpi"
MPIEXEC = Path(sys.executable).parent / "mpiexec"


def mpirun(
    script: str, ranks: int, *args: str, timeout: float = 240
) -> subprocess.CompletedProcess:
    if not MPIEXEC.exists():
        pytest.skip("mpiexec not found next to the Python executable: pip install 'pitsolve[mpi]'")
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [str(MPIEXEC), "-n", str(ranks), sys.executable, str(SCRIPTS / script), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def mpi_report(script: str, ranks: int, *args: str) -> dict:
    """The JSON report a script under ``tests/mpi/`` prints last, once it exited 0."""
    out = mpirun(script, ranks, *args)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_mpi_engine_equals_serial_engine(ranks):
    report = mpi_report("schwarz_engines.py", ranks)
    assert report["size"] == ranks
    for name, case in report["cases"].items():
        assert case["retcodes"] == ["Success"] * 3, name
        assert case["mpi_vs_serial"] <= 1e-12, name
        assert case["local_vs_serial"] <= 1e-12, name
        assert case["vs_sequential"] <= 1e-7, name
        assert case["sweeps"][0] == case["sweeps"][1], name
        if name.startswith("local-training"):
            continue
        rows = case["rows"]  # each rank's owned rows tile [0, T)
        assert rows[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(rows))


def test_local_training_checkpoint_on_ranks_resumes_like_the_serial_run(tmp_path):
    """Rank 0 gathers the windows into one checkpoint; every rank resumes from it."""
    report = mpi_report("local_checkpoint.py", 2, str(tmp_path))
    assert report["size"] == 2 and sorted(report["cases"]) == ["allreduce", "neighbour"]
    for sync, case in report["cases"].items():
        assert (case["stopped_epochs"], case["checkpoint_epoch"], case["resumed_epochs"]) == (
            3, 2, 4), sync
        assert case["resumed_vs_mpi"] == 0.0 and case["meta_vs_mpi"], sync  # bitwise
        assert case["resumed_vs_serial"] <= 1e-12 and case["meta_vs_serial"], sync
        assert case["model_vs_serial"] <= 1e-12, sync
        assert case["best"] == [2, 2], sync
        assert case["ranks_agree"] == 0.0, sync
        assert case["refused"] == [True, True], sync  # another mu: a ValueError on each rank
    # only rank 0 wrote the MPI runs' checkpoints (the serial runs: one file per rank)
    assert sorted(p.name for p in tmp_path.iterdir() if "mpi" in p.name) == [
        "allreduce-mpi-full.npz", "allreduce-mpi.npz", "neighbour-mpi-full.npz",
        "neighbour-mpi.npz"]


def test_a_failing_rank_aborts_the_job_with_its_message():
    out = mpirun("schwarz_engines.py", 3, "fail", timeout=120)
    assert out.returncode != 0
    assert "MPI rank 1 of 3 failed" in out.stderr
    assert "deliberate failure on rank 1" in out.stderr


def test_cli_trains_on_mpi_ranks_like_the_serial_engine(tmp_path):
    """``mpiexec -n 2 python -m pitsolve reconstruct --solver schwarz --engine mpi``."""
    tiny = ["reconstruct", "--T", "3000", "--epochs", "2", "--steps-per-epoch", "3",
            "--hidden", "8", "--seq-len", "50", "--batch-size", "4", "--quiet", "--long-run", "0",
            "--solver", "schwarz", "--windows", "2", "--overlap", "8"]
    if not MPIEXEC.exists():
        pytest.skip("mpiexec not found next to the Python executable")
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    reports = {}
    for engine, launcher in (("serial", []), ("mpi", [str(MPIEXEC), "-n", "2"])):
        out = tmp_path / engine
        cmd = [*launcher, sys.executable, "-m", "pitsolve", *tiny, "--engine", engine,
               "--out", str(out)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert res.returncode == 0, res.stderr[-3000:]
        assert res.stdout.count("D_stsp") == 1  # only rank 0 reports
        reports[engine] = json.loads((out / "report.json").read_text())
    assert reports["mpi"]["loss_history"] == pytest.approx(reports["serial"]["loss_history"],
                                                           rel=1e-12)


def test_each_rank_uses_the_device_of_its_node_local_rank():
    report = mpi_report("local_device.py", 3)
    assert [r["local"] for r in report] == [[0, 3], [1, 3], [2, 3]]  # one node here
    assert [r["device"] for r in report] == [0, 1, 0]
    assert [r["used"] for r in report] == [[0], [1], [0]]


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_the_scan_across_ranks_equals_the_single_process_scan(ranks):
    report = mpi_report("distributed_scan.py", ranks)
    assert report["size"] == ranks and len(report["cases"]) == 12
    for name, case in report["cases"].items():
        assert case["forward"] <= 1e-12 and case["transpose"] <= 1e-12, (name, case)
        assert case["h0"] <= 1e-12 and case["others_none"], (name, case)
    for errors in report["errors"]:  # the same error on every rank
        assert errors["empty"] == f"the time slices of ranks [{ranks - 1}] are empty"
        if ranks > 1:
            assert errors["width"].startswith("the ranks' slices disagree")


@pytest.mark.parametrize("ranks", [1, 2, 3])
def test_a_linear_problem_split_over_ranks_solves_and_differentiates_like_one_process(ranks):
    report = mpi_report("distributed_linear.py", ranks)
    assert report["size"] == ranks and len(report["cases"]) == 6
    for name, per_rank in report["cases"].items():
        for r in per_rank:
            assert r["rows"] and r["retcode"] == "Success", (name, r)
            for key in ("states", "b", "A", "h0"):
                assert r[key] <= 1e-12, (name, key, r)
    expected = "the ranks' slices of the time axis disagree" if ranks > 1 else None
    assert report["errors"] == [expected] * ranks


@pytest.mark.parametrize("ranks", [1, 2, 3, 4])
def test_deer_on_a_split_time_axis_equals_the_single_process_solve(ranks):
    """DEER's (Newton, quasi, Picard, line search, Levenberg–Marquardt), Newton–Krylov's and
    Sequential's iterates, return codes and vjp on a time axis split over ranks (uneven
    slices down to one step) equal the single-process ones; fallback, throw and the callback
    agree on every rank; bad input is the same error everywhere."""
    report = mpi_report("distributed_deer.py", ranks)
    assert report["size"] == ranks
    for name, per_rank in report["cases"].items():
        rows = [c["rows"] for c in per_rank]
        assert rows[0][0] == 0 and all(a[1] == b[0] for a, b in itertools.pairwise(rows)), name
        for c in per_rank:
            assert c["retcode"] == c["ref_retcode"], name
            assert c["iterations"][0] == c["iterations"][1], name  # the same iterates
            assert c["states"] <= 1e-12, name
            if c["retcode"] == "Success":
                assert max(c["params"], c["h0"], c["inputs"]) <= 1e-10, name
    assert report["cases"]["chaotic-linesearch"][0]["retcode"] == "Stalled"  # best iterate
    for fb in report["fallback"]:
        assert fb["retcode"] == "Success" and fb["fallback"] == "MaxIters", fb
        assert fb["states"] <= 1e-12 and fb["throw"] == "MaxIters", fb
        assert fb["callback"] == ["Terminated", 2] and fb["h_init"] == 0, fb
    errors = report["errors"]
    assert all(e == errors[0] for e in errors)  # the same message on every rank
    assert errors[0]["window"].startswith("window: windows do not run on a time axis split")
    if ranks > 1:
        assert errors[0]["width"].startswith(f"rank {ranks - 1}: inputs must have last axis")
        assert errors[0]["empty"].startswith(f"rank {ranks - 1}: inputs must have T ≥ 1")
        assert errors[0]["short"].startswith("on every rank: T=")


@pytest.mark.parametrize("ranks", [1, 3])
def test_loss_and_grad_on_a_series_split_over_ranks_equals_the_whole_series(ranks):
    """Uneven slices, down to one step: the loss and gradient of GTF/STF, DEER/Sequential and
    an observation model equal the single-process ones, the same on every rank; so does
    adaptive GTF's α."""
    report = mpi_report("sharded_loss.py", ranks)
    assert report["size"] == ranks and len(report["cases"]) == 8
    for name, per_rank in report["cases"].items():
        for e in per_rank:
            if name.startswith("alpha"):
                assert e <= 1e-13, name
            else:
                assert e["loss"] <= 1e-13 and e["grad"] <= 1e-10 and e["same_on_ranks"], name


def test_fit_on_a_series_split_over_ranks_checkpoints_once_and_resumes_anywhere(tmp_path):
    """fit(comm=) follows the single-process run; rank 0 alone writes the checkpoint; a run
    stopped after 2 epochs resumes to the uninterrupted parameters on the same ranks, on
    fewer ranks and in one process."""
    report = mpi_report("sharded_fit.py", 3, str(tmp_path))
    assert max(report["vs_serial"]) <= 1e-10 and max(report["loss_vs_serial"]) <= 1e-12
    assert max(report["alpha_vs_serial"]) <= 1e-12
    assert report["stopped"] == [2, True]
    assert all(w == ["sharded.npz"] for w in report["written"])  # one file, no leftovers
    assert sorted(report["resumed"][0]) == ["fewer", "one", "same"]
    assert sorted(report["resumed"][1]) == ["fewer", "same"]
    for per_rank in report["resumed"]:
        assert per_rank["same"] == 0.0  # bitwise
        assert all(v <= 1e-12 for v in per_rank.values())


def test_cli_splits_the_series_over_the_ranks_of_mpiexec(tmp_path):
    """``mpiexec -n 2 pitsolve reconstruct`` trains on the series split by time (the default
    under mpiexec), prints the report once and follows the one-process ``--split-time`` run."""
    tiny = ["reconstruct", "--T", "3000", "--epochs", "2", "--steps-per-epoch", "2",
            "--hidden", "8", "--quiet", "--long-run", "1000"]
    if not MPIEXEC.exists():
        pytest.skip("mpiexec not found next to the Python executable")
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "MPLBACKEND": "Agg"}
    reports = {}
    for name, launcher, flag in (("one", [], ["--split-time"]),
                                 ("two", [str(MPIEXEC), "-n", "2"], [])):
        out = tmp_path / name
        cmd = [*launcher, sys.executable, "-m", "pitsolve", *tiny, *flag, "--out", str(out)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
        assert res.returncode == 0, res.stderr[-3000:]
        assert res.stdout.count("D_stsp") == 1  # only rank 0 reports
        reports[name] = json.loads((out / "report.json").read_text())
    assert reports["two"]["loss_history"] == pytest.approx(reports["one"]["loss_history"],
                                                           rel=1e-10)
    assert reports["two"]["alpha_history"] == pytest.approx(reports["one"]["alpha_history"],
                                                            rel=1e-10)


@pytest.mark.parametrize("ranks", [1, 3, 4])
def test_the_lm_smoother_across_ranks_equals_the_single_process_smoother(ranks):
    """The covariance recursion by composite elements, the means and the reverse smoother
    across ranks: uneven slices down to one step, and an empty prefix of ranks."""
    report = mpi_report("distributed_lm.py", ranks)
    assert report["size"] == ranks
    for case in ("uneven", "empty_prefix"):
        for per_rank in report[case]:
            assert len(per_rank) == 4 and max(per_rank.values()) <= 1e-13, (case, per_rank)
