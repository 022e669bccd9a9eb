"""The ``pitsolve`` command end to end, through a subprocess, on tiny configurations."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

TINY = ["--T", "3000", "--epochs", "2", "--steps-per-epoch", "5", "--hidden", "8",
        "--seq-len", "50", "--batch-size", "4", "--long-run", "1000", "--quiet"]


def run(*args, timeout=240):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, "-m", "pitsolve", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def test_reconstruct_tiny_end_to_end(tmp_path):
    out = tmp_path / "run"
    res = run("reconstruct", *TINY, "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "D_stsp" in res.stdout and "truth" in res.stdout
    report = json.loads((out / "report.json").read_text())
    for key in ("best", "final", "wall_time_s", "solver_iterations_per_step", "loss_history"):
        assert key in report
    assert set(report["best"]) >= {"D_stsp", "D_H", "PE", "lyap_per_time", "diverged"}
    assert report["epochs"] == 2 and len(report["loss_history"]) == 2
    for name in ("model_best.npz", "model_final.npz", "checkpoint.npz", "reconstruction.png"):
        assert (out / name).exists(), name
    # the trained model can be evaluated and simulated
    data = tmp_path / "x.npy"
    from pitsolve.dsr import lorenz63

    np.save(data, lorenz63(T=2000, seed=5))
    ev = run("evaluate", str(out / "model_best.npz"), "--data", str(data))
    assert ev.returncode == 0, ev.stderr
    assert "D_stsp" in json.loads(ev.stdout.splitlines()[-1])
    sim = run("simulate", str(out / "model_best.npz"), "--steps", "100", "--out",
              str(tmp_path / "sim.csv"), "--x0", "0.1", "0.2", "0.3")
    assert sim.returncode == 0, sim.stderr
    assert np.loadtxt(tmp_path / "sim.csv", delimiter=",").shape == (100, 3)


def test_resume_continues_the_run(tmp_path):
    out = tmp_path / "run"
    first = run("reconstruct", *TINY, "--out", str(out))
    assert first.returncode == 0, first.stderr
    more = [a if a != "2" else "3" for a in TINY]  # three epochs instead of two
    again = run("reconstruct", *more, "--out", str(out), "--resume")
    assert again.returncode == 0, again.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["epochs"] == 3
    assert report["loss_history"][:2] == json.loads(
        json.dumps(report["loss_history"][:2]))  # histories carried over


@pytest.mark.parametrize(
    "args, message",
    [
        (["reconstruct", "--data", "/nonexistent/file.npy"], "file.npy"),
        (["reconstruct", "--forcing", "gtf:2"], "alpha"),
        (["reconstruct", "--forcing", "magic"], "--forcing"),
        (["reconstruct", "--forcing", "agtf:1.5"], "decay"),
        (["reconstruct", "--epochs", "0"], "--epochs"),
        (["reconstruct", "--latent", "2", "--observation", "identity"], "--latent"),
        (["reconstruct", "--resume", "--out", "/tmp/pitsolve-no-such-run"], "checkpoint"),
        (["evaluate", "/nonexistent.npz", "--data", "/nonexistent.npy"], "nonexistent"),
        (["simulate", "/nonexistent.npz", "--steps", "0", "--out", "x.npy"], "--steps"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(args, message):
    res = run(*args)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], res.stderr


def test_bad_data_file_is_reported(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("1,2,3\n4,5\n6,7,8\n")
    res = run("reconstruct", "--data", str(bad))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "bad.csv" in res.stderr


def test_ctrl_c_saves_a_checkpoint_that_resume_continues(tmp_path):
    out = tmp_path / "run"
    args = [sys.executable, "-m", "pitsolve", "reconstruct", "--T", "3000", "--epochs", "1000000",
            "--steps-per-epoch", "5", "--hidden", "8", "--seq-len", "50", "--batch-size", "4",
            "--quiet", "--out", str(out)]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    ckpt = out / "checkpoint.npz"
    try:
        deadline = time.time() + 180
        while not ckpt.exists() and time.time() < deadline:
            time.sleep(0.2)
        assert ckpt.exists(), "no checkpoint written"
        time.sleep(1.0)
        # a SIGINT that lands inside Numba's compiler can be absorbed: repeat until it exits
        err = ""
        for _ in range(30):
            proc.send_signal(signal.SIGINT)
            try:
                _, err = proc.communicate(timeout=5)
                break
            except subprocess.TimeoutExpired:
                continue
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert "--resume" in err and "Traceback" not in err
    from pitsolve.training import load_checkpoint

    _, meta = load_checkpoint(ckpt)
    done = meta["epoch"]
    assert done >= 1
    more = [a if a != "1000000" else str(done + 1) for a in args[3:]]
    res = run(*more, "--resume")
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["epochs"] == done + 1


@pytest.mark.slow
def test_default_configuration(tmp_path):
    """The README's main job: `pitsolve reconstruct` with no arguments (about 2.5 minutes on
    a quiet 2-core machine; the generous timeout allows for a shared one)."""
    res = run("reconstruct", "--out", str(tmp_path / "run"), timeout=2400)
    assert res.returncode == 0, res.stderr
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert np.isfinite(report["best"]["D_stsp"])
    assert Path(tmp_path / "run" / "reconstruction.png").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [(["--engine", "threads"], "--engine threads needs --solver schwarz"),
     (["--solver", "schwarz", "--overlap", "-1"], "--overlap must be ≥ 0"),
     (["--solver", "schwarz", "--windows", "0"], "windows must be ≥ 1")],
)
def test_schwarz_options_are_checked(tmp_path, args, message):
    res = run("reconstruct", *TINY, *args, "--out", str(tmp_path / "run"))
    assert res.returncode == 2 and message in res.stderr, res.stderr
    assert "Traceback" not in res.stderr


def test_warmup_runs_reconstruct_tiny_and_reports():
    res = run("warmup", "--solver", "sequential")
    assert res.returncode == 0, res.stderr[-2000:]
    assert "compiled and cached" in res.stdout and "(sequential)" in res.stdout


def test_compile_messages_count_and_report_compilations():
    """The status line names the kernel being compiled; nested compilations count once."""
    import io

    import numba

    from pitsolve._jitlog import compile_messages

    @numba.njit
    def inner(x):
        return x + 1

    @numba.njit
    def outer(x):
        return inner(x) * 2

    stream = io.StringIO()
    with compile_messages(stream) as log:
        assert outer(1) == 4
        assert outer(2) == 6  # compiled once
    assert log.count == 1 and log.seconds > 0
    text = stream.getvalue()
    assert "now outer ..." in text and "compiled 1 kernels in" in text
    assert log.as_dict()["kernels"] == 1
    quiet = io.StringIO()
    with compile_messages(quiet, quiet=True) as log:
        assert outer(1.5) == 5.0  # a new signature: compiled, counted, not shown
    assert log.count == 1 and quiet.getvalue() == ""
