"""Schwarz decomposition in time: strong scaling, sweeps versus overlap, training.

    python benchmarks/schwarz.py [--quick] [--T 100000] [--ranks 2]

1. Strong scaling on ``shplrnn_3x50`` (BENCHMARKS.md), forward solve to rtol 1e-10, against
   the single-process Numba ``Sequential`` solve timed alternately with each route in the same
   run (the machine's speed drifts by ±30 % over seconds, so a baseline timed once earlier
   would decide the ratio): Schwarz with one window per worker on the ``serial`` engine, the
   ``threads`` engine (2 threads) and the ``mpi`` engine (2 ranks launched with the venv's
   ``mpiexec``, one Numba thread each; Sequential runs on rank 0 while the other ranks sleep,
   the Schwarz solve is timed from a barrier to the slowest rank's finish), with the result
   gathered on every rank (``gather="all"``) and kept distributed (``gather="local"``).
   Reports the speed-up (ratio of medians), the quartiles of the per-pair ratios, the error
   against ``Sequential`` and the MPI result's difference from the serial engine's.
2. Sweeps to tolerance and extra work versus the overlap δ, for ``shplrnn_3x50`` (memory of
   ~60 steps; windows of 156 steps) and ``elman_memory`` (ρ = 0.8, memory ~100 steps, windows
   of 40 steps): sweeps with work and sweeps until the result was final.
3. Training (``--training``): loss versus wall time of local-objective Schwarz training
   (both sync modes) against global GTF-DEER on Lorenz-63.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from _timing import paired, quartiles

import pitsolve as ps
from pitsolve.testing import problems

TOL = {"rtol": 1e-10, "atol": 1e-12}


def overlap_for(T):
    return 128


def mpi_worker(T, repeats, gather):
    """Runs on every rank: times the MPI-engine solve; rank 0 prints JSON."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    prob = problems.shplrnn_3x50(T=T).problem()
    alg = ps.Schwarz(windows=comm.size, overlap=overlap_for(T), engine="mpi", gather=gather)
    # the machine's ceiling: every rank steps its share of T independently, no Schwarz
    share = problems.shplrnn_3x50(T=-(-T // comm.size)).problem()
    ps.solve(prob, alg, **TOL)  # compile and warm up
    ps.solve(prob, ps.Sequential())
    times, seq_times, ceiling = [], [], []
    for _ in range(repeats):
        # the baseline, interleaved: rank 0 alone runs Sequential while the others sleep (not
        # spin) in a non-blocking barrier, so that slow drifts of the machine hit both alike
        if comm.rank == 0:
            t0 = time.perf_counter()
            ps.solve(prob, ps.Sequential())
            seq_times.append(time.perf_counter() - t0)
        req = comm.Ibarrier()
        while not req.Test():
            time.sleep(1e-4)
        comm.Barrier()
        t0 = time.perf_counter()
        sol = ps.solve(prob, alg, **TOL)
        times.append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
        comm.Barrier()
        t0 = time.perf_counter()
        ps.solve(share, ps.Sequential())
        ceiling.append(comm.allreduce(time.perf_counter() - t0, op=MPI.MAX))
    out = {"time": statistics.median(times), "retcode": sol.retcode.name,
           "sequential_time": statistics.median(seq_times) if seq_times else None,
           "sweeps": sol.stats["schwarz"]["sweeps"],
           "work_ratio": sol.stats["schwarz"]["work_ratio"]}
    out["ceiling_time"] = statistics.median(ceiling)
    if seq_times:
        out["quartiles"] = quartiles([s / t for s, t in zip(seq_times, times, strict=True)])
    # the whole result on rank 0 (outside the timed region for gather="local")
    states = sol.states if gather == "all" else comm.gather(sol.states)
    if comm.rank == 0:
        states = states if gather == "all" else np.concatenate(states, axis=-2)
        serial = ps.solve(prob, ps.Schwarz(windows=comm.size, overlap=overlap_for(T)), **TOL)
        seq = ps.solve(prob, ps.Sequential()).states
        out["vs_serial_engine"] = float(np.abs(states - serial.states).max())
        out["vs_sequential"] = float(np.abs(states - seq).max())
        print(json.dumps(out))


def launch_mpi(T, ranks, repeats, gather, default_allocator):
    mpiexec = Path(sys.executable).parent / "mpiexec"
    env = {**os.environ, "NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    cmd = [str(mpiexec), "-n", str(ranks), sys.executable, __file__, "--mpi-worker",
           "--T", str(T), "--repeats", str(repeats), "--gather", gather]
    cmd += ["--default-allocator"] if default_allocator else []
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def scaling(T, ranks, repeats, default_allocator):
    print(f"\n## Strong scaling: shplrnn_3x50, T = {T}, δ = {overlap_for(T)}, rtol 1e-10\n")
    print("speed-up = median Sequential time / median route time, the two timed alternately in\n"
          "the same process (MPI: Sequential on rank 0 while the other ranks sleep).\n")
    prob = problems.shplrnn_3x50(T=T).problem()
    sequential = ps.solve(prob, ps.Sequential()).states
    print(f"{'route':40s} {'seq ms':>7s} {'route ms':>8s} {'speed-up':>8s} {'quartiles':>11s} "
          f"{'sweeps':>6s} {'work':>6s} {'max |err|':>10s}")
    rows = []

    def report(name, t_seq, t, spread, sweeps, work, err):
        print(f"{name:40s} {1e3 * t_seq:7.2f} {1e3 * t:8.2f} {t_seq / t:8.2f} "
              f"{spread[0]:5.2f}-{spread[1]:<5.2f} {sweeps:6d} {work:6.3f} {err:10.2e}")
        rows.append((name, t_seq / t))

    for name, alg in {
        f"Schwarz serial engine, P={ranks}": ps.Schwarz(windows=ranks, overlap=overlap_for(T)),
        f"Schwarz threads engine, {ranks} threads": ps.Schwarz(
            windows=ranks, overlap=overlap_for(T), engine="threads", workers=ranks),
    }.items():
        t_seq, t, slow, sol = paired(lambda: ps.solve(prob, ps.Sequential()),
                                     lambda alg=alg: ps.solve(prob, alg, **TOL), repeats)
        spread = (1 / slow[1], 1 / slow[0])  # quartiles of the speed-ups
        info = sol.stats["schwarz"]
        report(name, t_seq, t, spread, info["sweeps"], info["work_ratio"],
               float(np.abs(sol.states - sequential).max()))
    for gather in ("all", "local"):
        res = launch_mpi(T, ranks, repeats, gather, default_allocator)
        report(f"Schwarz mpi engine, {ranks} ranks, gather={gather}", res["sequential_time"],
               res["time"], res["quartiles"], res["sweeps"], res["work_ratio"],
               res["vs_sequential"])
        print(f"{'':40s} MPI vs serial engine: max |diff| = {res['vs_serial_engine']:.1e}; "
              f"ceiling (each rank steps T/{ranks} alone, no Schwarz): "
              f"{res['sequential_time'] / res['ceiling_time']:.2f}")
    return rows


def sweeps_vs_overlap(quick):
    print("\n## Sweeps to tolerance versus overlap δ (rtol 1e-10, serial engine)\n")
    cases = {
        "shplrnn_3x50, T=1e4, P=64": (problems.shplrnn_3x50(T=10_000).problem(), 64,
                                      (0, 8, 16, 32, 64, 128)),
        "elman_memory ρ=0.8, T=4000, P=100": (problems.elman_memory(T=4000).problem(), 100,
                                              (0, 5, 10, 20, 30, 39)),
    }
    print(f"{'problem':34s} {'δ':>5s} {'sweeps':>6s} {'final':>6s} {'work':>6s} "
          f"{'max |err|':>10s}")
    for name, (prob, P, overlaps) in cases.items():
        ref = ps.solve(prob, ps.Sequential()).states
        for d in overlaps[::2] if quick else overlaps:
            sol = ps.solve(prob, ps.Schwarz(windows=P, overlap=d), **TOL)
            info = sol.stats["schwarz"]
            print(f"{name:34s} {d:5d} {info['sweeps']:6d} {info['sweeps_to_tolerance']:6d} "
                  f"{info['work_ratio']:6.3f} "
                  f"{float(np.abs(sol.states - ref).max()):10.2e}")


def training_comparison(quick):
    """Loss versus wall time: local objectives (both syncs) against global GTF-DEER."""
    T = 2_000 if quick else 10_000
    epochs, steps = (4, 5) if quick else (10, 10)
    print(f"\n## Training: shPLRNN(3, 50) on lorenz63 T={T}, GTF α=0.2, Adam lr 1e-3, "
          f"{epochs}×{steps} steps\n")
    from pitsolve.training.losses import loss_and_grad

    data = ps.dsr.lorenz63(T=T, dt=0.01, seed=1)
    forcing = ps.GTF(alpha=0.2)
    windows = ps.Schwarz(windows=8, overlap=32, engine="threads", workers=2)
    routes = {  # (solver, objective)
        "global GTF-DEER": (ps.DEER(), "global"),
        "Schwarz local, allreduce (P=8, threads)": (
            windows, ps.training.LocalObjective(mu=0.1)),
        "Schwarz local, neighbour (P=8, threads)": (
            windows, ps.training.LocalObjective(mu=0.1, sync="neighbour")),
    }
    print(f"{'route':42s} {'wall s':>7s} {'global loss after epoch 1, mid, end':>40s}")
    for name, (solver, objective) in routes.items():
        model = ps.models.ShPLRNN(3, 50, seed=0)
        curve = []

        def record(info, curve=curve):
            loss, _ = loss_and_grad(info["model"], data, forcing=forcing, solver=ps.Sequential())
            curve.append((info["stats"]["wall_time"], loss))

        ps.fit(model, data[: T // 4], forcing=forcing, solver=solver, objective=objective,
               epochs=1, steps_per_epoch=1, seq_len=None)  # compile the kernels first
        res = ps.fit(model, data, forcing=forcing, solver=solver, objective=objective,
                     epochs=epochs, steps_per_epoch=steps, seq_len=None, callbacks=[record],
                     optimizer=ps.optim.Adam(lr=1e-3))
        wall = sum(t for t, _ in curve)
        picks = [curve[0][1], curve[len(curve) // 2][1], curve[-1][1]]
        print(f"{name:42s} {wall:7.2f} " + "  ".join(f"{v:.3e}" for v in picks)
              + ("" if res.stopped is None else f"  stopped: {res.stopped}"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    ap.add_argument("--T", type=int, default=100_000)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--training", action="store_true", help="also run the training comparison")
    ap.add_argument("--mpi-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--gather", default="all", help=argparse.SUPPRESS)
    ap.add_argument("--default-allocator", action="store_true",
                    help="do not call ps.tune_allocator() (glibc then returns freed memory to "
                         "the OS and pages fault in again)")
    args = ap.parse_args()
    tuned = False if args.default_allocator else ps.tune_allocator()
    repeats = args.repeats or (5 if args.quick else 21)
    if args.mpi_worker:
        mpi_worker(args.T, repeats, args.gather)
        return
    T = 10_000 if args.quick else args.T
    print(f"Schwarz benchmark — load average {os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs, "
          f"allocator {'tuned (ps.tune_allocator)' if tuned else 'default'}")
    scaling(T, args.ranks, repeats, args.default_allocator)
    sweeps_vs_overlap(args.quick)
    if args.training:
        training_comparison(args.quick)


if __name__ == "__main__":
    main()
