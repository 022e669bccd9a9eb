"""DEER on a GPU: CuPy arrays in, CuPy arrays out, on pitsolve's CUDA kernels.

    python examples/gpu_deer.py             # a CUDA device, CuPy and numba-cuda (pitsolve[gpu])
    python examples/gpu_deer.py --simulate  # no device: Numba's CUDA simulator on the CuPy
                                            # stand-in, a tiny problem (slow, checks only)

Solves the shPLRNN benchmark problem with DEER and quasi-DEER on the device, compares the
trajectory and the parameter gradient with the CPU (Numba) solve, and prints which kernels
ran and how often per Newton iteration.
"""

from __future__ import annotations

import os
import sys

SIMULATE = "--simulate" in sys.argv
if SIMULATE:  # before numba.cuda is imported anywhere
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import numpy as np  # noqa: E402

import pitsolve as ps  # noqa: E402
from pitsolve.kernels.cuda import registry  # noqa: E402
from pitsolve.testing import problems  # noqa: E402


def run(cp, T: int) -> None:
    model, h0, _ = problems.shplrnn_3x50(T=T)
    host = ps.RecurrenceProblem(model, h0, T=T)
    device = ps.RecurrenceProblem(model, cp.asarray(h0), T=T)  # the model follows the data
    g = np.random.default_rng(0).normal(size=(T, 3))
    for alg in (ps.DEER(), ps.DEER(jacobian="diagonal")):
        ref = ps.solve(host, alg)
        registry.LAUNCHES.clear()
        sol = ps.solve(device, alg)
        it = sol.stats.iterations
        kernels = ", ".join(f"{k} x{v / it:.2g}" for k, v in registry.LAUNCHES.items())
        err = np.abs(sol.states.get() - ref.states).max()
        grad = sol.vjp(cp.asarray(g)).params.flatten().get()
        grad_err = np.abs(grad - ref.vjp(g).params.flatten()).max()
        print(f"{alg.jacobian:>8} DEER: {sol.retcode.name}, {it} iterations on "
              f"{sol.backend.name} (CUDA kernels: {sol.backend.cuda}); |states - CPU| = "
              f"{err:.1e}, |gradient - CPU| = {grad_err:.1e}")
        print(f"          kernel launches per iteration of the solve: {kernels}")


if __name__ == "__main__":
    if SIMULATE:
        from pitsolve.testing import cudasim, fake_cupy

        cudasim.prepare()
        with fake_cupy.installed() as cp:
            run(cp, T=32)
    else:
        import cupy

        run(cupy, T=100_000)
