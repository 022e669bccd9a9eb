"""``stats.peak_bytes`` counts every array a solve holds — the callees' temporaries (a model's
evaluation, a scan, the Kalman smoother) included: it agrees with what NumPy allocates."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

import pitsolve as ps
from pitsolve.algorithms._memory import call_with_peak, held_bytes
from pitsolve.testing import problems

CASES = {
    # GRU's dense Jacobians are built from several (T, D, D) temporaries: DEER reported a
    # fifth of its memory when only its own arrays were counted (133 MiB of 643 at T = 4000)
    "gru DEER": ("gru_64", 300, ps.DEER()),
    "gru DEER numpy": ("gru_64", 300, ps.DEER(backend="numpy")),
    "gru DEER+LM": ("gru_64", 200, ps.DEER(damping=ps.LevenbergMarquardt())),
    "elman quasi-DEER": ("elman_256", 300, ps.DEER(jacobian="diagonal")),
    "shplrnn DEER+line search": ("shplrnn_3x50", 5000, ps.DEER(damping=ps.LineSearch())),
    "gru Newton-Krylov": ("gru_64", 400, ps.NewtonKrylov()),
    "gru Newton-Krylov windows": ("gru_64", 400, ps.NewtonKrylov(window=100)),
    "gru Sequential": ("gru_64", 2000, ps.Sequential()),
}


def _traced(prob, alg):
    tracemalloc.start()
    try:
        sol = ps.solve(prob, alg)
        return sol, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("case", CASES)
def test_peak_bytes_is_what_the_solve_allocates(case):
    name, T, alg = CASES[case]
    model, h0, x = getattr(problems, name)(T=T)
    prob = ps.RecurrenceProblem(model, h0, inputs=x, T=T)
    for _ in range(2):  # compile; then the calls' temporaries are measured (once per kind)
        ps.solve(prob, alg)
    sol, traced = _traced(prob, alg)
    assert ps.is_successful(sol)
    assert 0.8 * traced <= sol.stats.peak_bytes <= 1.25 * traced, (sol.stats.peak_bytes, traced)


def test_held_bytes_counts_each_buffer_once():
    a = np.zeros((100, 8))
    assert held_bytes(a, a[10:], a.T, None) == a.nbytes
    b = np.broadcast_to(np.zeros(8), (1000, 8))  # a broadcast allocates nothing
    assert held_bytes(a, b) == a.nbytes + 64


def test_call_with_peak_measures_the_temporaries_once_then_scales():
    def work(n):
        tmp = np.ones((n, 100))  # 800 bytes per row, freed before returning
        return tmp.sum(axis=1)  # 8 bytes per row returned

    key = ("test", object())
    _, first = call_with_peak(key, 1100, lambda: work(1100))
    assert first == 8800  # the first call only counts its result (it may compile)
    _, second = call_with_peak(key, 1100, lambda: work(1100))
    assert 888_800 <= second <= 893_000  # traced: the temporary and the result
    _, third = call_with_peak(key, 1500, lambda: work(1500))  # same range: scaled
    assert third == int(second / 1100 * 1500)
