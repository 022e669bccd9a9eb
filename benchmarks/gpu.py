"""GPU benchmarks (issue 13): scan throughput against the copy bandwidth, DEER against the CPU.

Usage::

    python benchmarks/gpu.py              # on a machine with a CUDA device, CuPy, numba-cuda
    python benchmarks/gpu.py --simulate   # no device: a tiny smoke version under Numba's CUDA
                                          # simulator on the CuPy stand-in (timings meaningless)

Tables (a device run; every ratio against a baseline timed in the same run):

``scan``
    the diagonal and dense forward scans (float32, batch 1 and 64) in GB/s of the bytes one
    pass must move (read A and b, write h) and as a fraction of the device-to-device copy
    bandwidth (``y[...] = x`` over 1 GiB, CuPy) measured first. Target (docs/benchmarks.md):
    ≥ 0.8 at T·D ≥ 10⁸ for diagonal maps.
``deer``
    DEER (float64) on ``shplrnn_3x50`` and ``gru_64`` at T = 10⁶, batch 1 and 64, against the
    compiled CPU loop (``Sequential`` on NumPy arrays, the Numba backend, same machine) and
    against ``Sequential`` on the GPU (a loop of kernel launches per step, timed at T = 10⁴
    and scaled linearly: it is slow by construction); Newton iterations; the peak memory
    the CuPy pool held. Target: ≥ 100× the CPU loop for ``shplrnn_3x50``.

The simulated run executes the same code paths on sizes the simulator can manage (each CUDA
thread is a Python thread) and checks the results against the NumPy backend; its times say
nothing about a GPU. It also counts, per Newton iteration, the launches of pitsolve's CUDA
kernels and the other device operations (on CuPy, about one kernel launch each; counted by
the stand-in, allocations and views excluded): the fixed cost of an iteration, which on a
device is ~5–10 µs per launch whatever T.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

SIMULATE = "--simulate" in sys.argv
if SIMULATE:  # before numba.cuda is imported anywhere
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np  # noqa: E402

import pitsolve as ps  # noqa: E402
from pitsolve.testing import problems  # noqa: E402


def _sync(cp) -> None:
    if hasattr(cp.cuda, "get_current_stream"):  # (the stand-in has no streams)
        cp.cuda.get_current_stream().synchronize()


def _time(cp, fn, repeats: int = 3) -> tuple[float, object]:
    out = fn()  # warm-up: compilation, pool
    _sync(cp)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        _sync(cp)
        times.append(time.perf_counter() - t)
    return float(np.median(times)), out


def copy_bandwidth(cp, nbytes: int) -> float:
    x = cp.ones(nbytes // 4, dtype=cp.float32)
    y = cp.empty_like(x)

    def copy():
        y[...] = x

    t, _ = _time(cp, copy, 5)
    return 2 * nbytes / t


def scan_table(cp, sizes, bandwidth: float | None) -> None:
    from pitsolve.kernels import affine_scan

    print(f"\n{'scan':>6} {'B':>4} {'T':>10} {'D':>4} {'ms':>10} {'GB/s':>8} {'of copy':>8}")
    rng = np.random.default_rng(0)
    for dense, B, T, D in sizes:
        shape = (B, T, D, D) if dense else (B, T, D)
        A = cp.asarray(rng.uniform(-1, 1, shape).astype(np.float32) / (D if dense else 1))
        b = cp.asarray(rng.normal(size=(B, T, D)).astype(np.float32))
        h0 = cp.zeros((B, D), dtype=np.float32)
        t, out = _time(cp, lambda A=A, b=b, h0=h0: affine_scan(A, b, h0, kernel="cuda"))
        moved = A.nbytes + b.nbytes + out.nbytes
        if SIMULATE:
            ref = affine_scan(A.get(), b.get(), h0.get(), kernel="numpy")
            np.testing.assert_allclose(out.get(), ref, rtol=1e-4, atol=1e-4)
        frac = f"{moved / t / bandwidth:8.2f}" if bandwidth else "     n/a"
        print(f"{'dense' if dense else 'diag':>6} {B:>4} {T:>10} {D:>4} {1e3 * t:>10.2f} "
              f"{moved / t / 1e9:>8.2f} {frac}")


def deer_table(cp, cases, seq_T: int) -> None:
    pool = cp.get_default_memory_pool() if hasattr(cp, "get_default_memory_pool") else None
    print(f"\n{'problem':>14} {'B':>3} {'T':>9} {'DEER s':>9} {'iters':>5} {'CPU loop s':>10} "
          f"{'x CPU':>7} {'GPU seq s':>10} {'x GPU seq':>9} {'peak MiB':>9}")
    for name, B, T in cases:
        model, h0, inputs = getattr(problems, name)(T=T)
        H0 = np.broadcast_to(h0, (B, h0.shape[-1])).copy()
        X = None if inputs is None else np.broadcast_to(inputs, (B, *inputs.shape)).copy()
        host = ps.RecurrenceProblem(model, H0, inputs=X, T=None if X is not None else T)
        t_cpu, ref = _time(cp, lambda p=host: ps.solve(p, ps.Sequential()), 1)
        dev = ps.RecurrenceProblem(model, cp.asarray(H0), inputs=None if X is None
                                   else cp.asarray(X), T=None if X is not None else T)
        if pool is not None:
            pool.free_all_blocks()
        t_deer, sol = _time(cp, lambda p=dev: ps.solve(p, ps.DEER()), 1)
        peak = pool.total_bytes() / 2**20 if pool is not None else float("nan")
        assert ps.is_successful(sol), sol.retcode
        np.testing.assert_allclose(sol.states.get(), ref.states, rtol=1e-6, atol=1e-8)
        Ts = min(seq_T, T)
        short = ps.RecurrenceProblem(model, cp.asarray(H0), inputs=None if X is None
                                     else cp.asarray(X[:, :Ts]), T=None if X is not None else Ts)
        t_seq, _ = _time(cp, lambda p=short: ps.solve(p, ps.Sequential()), 1)
        t_seq *= T / Ts
        print(f"{name:>14} {B:>3} {T:>9} {t_deer:>9.3f} {sol.stats.iterations:>5} {t_cpu:>10.3f} "
              f"{t_cpu / t_deer:>7.1f} {t_seq:>10.2f} {t_seq / t_deer:>9.1f} {peak:>9.1f}")


def launch_table(cp, cases) -> None:
    """Per Newton iteration: pitsolve's kernel launches and the stand-in's other operations,
    for ``(label, (model, h0, inputs), T)`` cases (counts do not depend on the sizes)."""
    from pitsolve.kernels.cuda import registry
    from pitsolve.testing import fake_cupy

    print(f"\n{'problem':>14} {'T':>4} {'solver':>10} {'iters':>5} {'kernels/it':>10} "
          f"{'other ops/it':>12}  kernels")
    for name, (model, h0, x), T in cases:
        dev = ps.RecurrenceProblem(model, cp.asarray(h0), inputs=None if x is None
                                   else cp.asarray(x), T=None if x is not None else T)
        for label, alg in (("DEER", ps.DEER()), ("quasi", ps.DEER(jacobian="diagonal"))):
            ps.solve(dev, alg)
            registry.LAUNCHES.clear()
            fake_cupy.OPERATIONS.clear()
            sol = ps.solve(dev, alg)
            it = sol.stats.iterations
            kernels = ", ".join(f"{k} {v / it:.2g}" for k, v in registry.LAUNCHES.items())
            print(f"{name:>14} {T:>4} {label:>10} {it:>5} "
                  f"{sum(registry.LAUNCHES.values()) / it:>10.1f} "
                  f"{sum(fake_cupy.OPERATIONS.values()) / it:>12.1f}  {kernels}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--simulate", action="store_true",
                        help="tiny sizes under the CUDA simulator on the CuPy stand-in")
    args = parser.parse_args()
    if args.simulate:
        from pitsolve.testing import cudasim, fake_cupy

        cudasim.prepare()
        with fake_cupy.installed() as cp:
            print("SIMULATED (NUMBA_ENABLE_CUDASIM=1, CuPy stand-in): code paths and results "
                  "are checked, times mean nothing")
            scan_table(cp, [(False, 1, 37, 2), (False, 3, 16, 1), (True, 1, 21, 3)], None)
            deer_table(cp, [("shplrnn_3x50", 1, 24), ("shplrnn_3x50", 2, 16)], 8)
            rng = np.random.default_rng(0)
            launch_table(cp, [
                ("shplrnn_3x50", problems.shplrnn_3x50(T=16), 16),
                ("GRU(4, 2)", (ps.models.GRU(4, 2), np.zeros(4), rng.normal(size=(8, 2))), 8),
                ("Elman(80, 2)", (ps.models.Elman(80, 2), np.zeros(80),  # D > 64: no dense
                                  rng.normal(size=(4, 2))), 4),           # scan kernel
            ])
        return
    import cupy as cp

    from pitsolve.kernels.cuda import available

    if not available():
        sys.exit("no CUDA device (or numba-cuda missing); try --simulate")
    bw = copy_bandwidth(cp, 1 << 30)
    print(f"device-to-device copy: {bw / 1e9:.1f} GB/s "
          f"({cp.cuda.runtime.getDeviceProperties(0)['name'].decode()})")
    scan_table(cp, [(False, 1, 10**8, 1), (False, 1, 10**6, 100), (False, 64, 10**6, 4),
                    (False, 1, 10**6, 1), (True, 1, 10**6, 3), (True, 64, 10**5, 16)], bw)
    deer_table(cp, [("shplrnn_3x50", 1, 10**6), ("shplrnn_3x50", 64, 10**6),
                    ("gru_64", 1, 10**6), ("gru_64", 64, 10**5)], 10**4)


if __name__ == "__main__":
    main()
