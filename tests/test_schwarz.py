"""Schwarz decomposition in time: partitions, the forward solve on every in-process engine."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pitsolve as ps
from pitsolve.parallel import Partition
from pitsolve.testing import problems
from pitsolve.training.losses import forced_problem

from .test_deer import contracting_model, contracting_problems

TOL = {"rtol": 1e-10, "atol": 1e-12}


# -- partition ------------------------------------------------------------------------------


@given(T=st.integers(1, 500), P=st.integers(1, 40), frac=st.floats(0, 1))
def test_partition_owns_every_step_once(T, P, frac):
    P = min(P, T)
    shortest = T // P
    overlap = int(frac * (shortest - 1)) if P > 1 else 0
    part = Partition.uniform(T, P, overlap)
    owned = np.zeros(T, int)
    for p in range(P):
        a, b = part.owned(p)
        owned[a:b] += 1
        s, e = part.covered(p)
        assert e == b and s == max(a - overlap, 0)
        assert part.handoff(p) == s - 1
        if p > 0:  # the initial state is owned by the left neighbour, never further left
            assert part.owned(p - 1)[0] <= part.handoff(p) < a
    assert (owned == 1).all()
    lengths = np.diff(part.bounds)
    assert lengths.max() - lengths.min() <= 1


def test_partition_explicit_boundaries_and_blocks():
    part = Partition.from_boundaries(100, [10, 60], overlap=5)
    assert part.bounds == (0, 10, 60, 100) and part.P == 3
    assert part.covered(1) == (5, 60) and part.covered(2) == (55, 100)
    assert [list(b) for b in part.blocks(2)] == [[0, 1], [2]]
    with pytest.raises(ValueError, match="at least as many windows"):
        part.blocks(4)


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: Partition.uniform(5, 6, 0), "exceeds the number of steps"),
        (lambda: Partition.uniform(100, 4, 25), "overlap=25 must be smaller"),
        (lambda: Partition.uniform(100, 0, 1), "windows must be ≥ 1"),
        (lambda: Partition.uniform(100, 4, -1), "overlap must be ≥ 0"),
        (lambda: Partition.from_boundaries(100, [50, 40], 1), "increase strictly"),
        (lambda: Partition.from_boundaries(100, [50, 100], 1), "increase strictly"),
    ],
)
def test_partition_rejects_bad_layouts(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_partition_type_errors():
    with pytest.raises(TypeError, match="windows must be an integer"):
        Partition.uniform(100, 2.5, 1)
    with pytest.raises(TypeError, match="overlap must be an integer"):
        Partition.uniform(100, 2, True)


def test_one_window_ignores_overlap():
    assert Partition.uniform(10, 1, 50).overlap == 0


# -- the algorithm's options ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"windows": 0}, ValueError, "windows must be ≥ 1"),
        ({"overlap": -2}, ValueError, "overlap must be ≥ 0"),
        ({"overlap": 1.5}, TypeError, "overlap must be an integer"),
        ({"inner": ps.Schwarz()}, TypeError, "inner must be"),
        ({"inner": "deer"}, TypeError, "inner must be"),
        ({"engine": "gpu"}, ValueError, "engine must be one of"),
        ({"max_sweeps": 0}, ValueError, "max_sweeps"),
        ({"gather": "root"}, ValueError, "gather must be one of"),
    ],
)
def test_invalid_options(kwargs, error, match):
    with pytest.raises(error, match=match):
        ps.Schwarz(**kwargs)


def test_invalid_layout_for_the_problem_names_the_argument():
    prob = problems.shplrnn_3x50(T=50).problem()
    with pytest.raises(ValueError, match="windows=60 exceeds"):
        ps.solve(prob, ps.Schwarz(windows=60))
    with pytest.raises(ValueError, match="overlap=30 must be smaller"):
        ps.solve(prob, ps.Schwarz(windows=2, overlap=30))
    with pytest.raises(ValueError, match="gather='local' is for engine='mpi'"):
        ps.solve(prob, ps.Schwarz(windows=2, overlap=3, gather="local"))


# -- the forward solve ----------------------------------------------------------------------

INNER = [ps.Sequential(), ps.DEER(), ps.DEER(jacobian="diagonal"), ps.NewtonKrylov()]


@pytest.mark.parametrize("inner", INNER, ids=repr)
@given(prob=contracting_problems(), P=st.integers(1, 8), frac=st.floats(0, 1),
       engine=st.sampled_from(["serial", "threads"]))
def test_equals_sequential(inner, prob, P, frac, engine):
    P = min(P, prob.T)
    overlap = int(frac * (prob.T // P - 1)) if P > 1 else 0
    ref = ps.solve(prob, ps.Sequential())
    alg = ps.Schwarz(windows=P, overlap=overlap, inner=inner, engine=engine, workers=2)
    sol = ps.solve(prob, alg, maxiter=200, **TOL)
    assert ps.is_successful(sol), sol.retcode
    assert sol.states.shape == ref.states.shape and sol.states.dtype == prob.dtype
    # merges and inner solves are exact to the tolerance; contraction ≤ 0.7 keeps it
    np.testing.assert_allclose(sol.states, ref.states, atol=1e-9 * (1 + np.abs(ref.states).max()))
    info = sol.stats["schwarz"]
    assert 1 <= info["sweeps"] <= P and info["windows"] == P


@pytest.mark.parametrize("inner", [ps.Sequential(), ps.DEER()], ids=repr)
def test_one_window_is_the_inner_solver(inner):
    prob = problems.gru_64(T=300).problem()
    ref = ps.solve(prob, inner)
    sol = ps.solve(prob, ps.Schwarz(windows=1, inner=inner))
    np.testing.assert_array_equal(sol.states, ref.states)
    assert sol.stats["schwarz"]["sweeps"] == 1 and sol.stats["schwarz"]["work_ratio"] == 1.0


def test_threads_equal_serial_bit_for_bit():
    prob = problems.shplrnn_3x50(T=5000).problem()
    alg = dict(windows=6, overlap=40, inner=ps.DEER())
    a = ps.solve(prob, ps.Schwarz(engine="serial", **alg))
    b = ps.solve(prob, ps.Schwarz(engine="threads", workers=3, **alg))
    np.testing.assert_array_equal(a.states, b.states)
    assert a.stats["schwarz"]["sweeps"] == b.stats["schwarz"]["sweeps"]


def test_long_overlap_needs_few_sweeps_and_little_extra_work():
    """δ beyond the memory length: owned parts are right after sweep 1, sweep 2 only merges."""
    prob = problems.shplrnn_3x50(T=20_000).problem()
    ref = ps.solve(prob, ps.Sequential()).states
    sol = ps.solve(prob, ps.Schwarz(windows=16, overlap=100), **TOL)
    info = sol.stats["schwarz"]
    assert ps.is_successful(sol) and info["sweeps"] == 2 and info["sweeps_to_tolerance"] == 1
    assert info["work_ratio"] < 1.2  # owned steps + overlaps + short merges
    np.testing.assert_allclose(sol.states, ref, atol=1e-9)


def slow_memory_problem(T=4000, rho=0.8):
    return problems.elman_memory(T=T, rho=rho).problem()


def test_sweeps_decrease_as_overlap_grows():
    """Windows (40 steps) shorter than the memory: information moves one window per sweep, and
    the overlap adds ρ^δ of decay before the owned rows, so fewer sweeps reach tolerance."""
    prob = slow_memory_problem()
    ref = ps.solve(prob, ps.Sequential()).states
    sweeps = []
    for overlap in (0, 20, 39):
        sol = ps.solve(prob, ps.Schwarz(windows=100, overlap=overlap), **TOL)
        assert ps.is_successful(sol)
        np.testing.assert_allclose(sol.states, ref, atol=1e-9)
        info = sol.stats["schwarz"]
        assert 2 < info["sweeps_to_tolerance"] <= info["sweeps"] < 10
        sweeps.append(info["sweeps_to_tolerance"])
    assert sweeps == sorted(sweeps, reverse=True) and sweeps[0] > sweeps[-1], sweeps


def test_exact_after_P_sweeps_even_without_overlap():
    """Causality: window p is exact after sweep p, whatever the overlap and memory."""
    prob = slow_memory_problem(T=120, rho=0.99)
    ref = ps.solve(prob, ps.Sequential()).states
    state = ps.init(prob, ps.Schwarz(windows=6, overlap=0), **TOL)
    assert state.partition.P == 6
    while not state.done:
        ps.step(state)
        k = state.sweep
        for p in range(k):  # windows 0..k-1 are final after sweep k
            a, b = state.partition.owned(p)
            c = state.partition.covered(p)[0]
            np.testing.assert_allclose(state.windows[p].states[a - c : b - c], ref[a:b],
                                       atol=1e-9)
    assert ps.is_successful(state.solution())


def test_max_sweeps_reports_maxiters_unless_settled():
    prob = slow_memory_problem(T=120, rho=0.99)
    sol = ps.solve(prob, ps.Schwarz(windows=6, overlap=0, max_sweeps=2), **TOL)
    assert sol.retcode is ps.ReturnCode.MaxIters
    assert np.isfinite(sol.states).all()
    prob = problems.shplrnn_3x50(T=2000).problem()
    sol = ps.solve(prob, ps.Schwarz(windows=8, overlap=100, max_sweeps=3), **TOL)
    assert ps.is_successful(sol)  # settled (no window worked in sweep 3) before P sweeps


def test_gtf_forced_chaotic_system_needs_few_sweeps():
    """Unforced, the chaotic model has no memory bound; GTF forcing makes it contract."""
    model = problems.chaotic_clipped_3x50(T=2).model
    data = ps.dsr.lorenz63(T=4000, dt=0.01, seed=2)
    prob = forced_problem(model, data, ps.GTF(alpha=0.9), 0.9)
    ref = ps.solve(prob, ps.Sequential()).states
    sol = ps.solve(prob, ps.Schwarz(windows=8, overlap=60, inner=ps.DEER()), **TOL)
    assert ps.is_successful(sol) and sol.stats["schwarz"]["sweeps"] <= 3
    np.testing.assert_allclose(sol.states, ref, atol=1e-8 * (1 + np.abs(ref).max()))


def test_statistics_and_exchanged_bytes():
    model, _ = contracting_model("shplrnn", 3, 0)
    prob = ps.RecurrenceProblem(model, np.zeros((2, 3)), T=400)
    sol = ps.solve(prob, ps.Schwarz(windows=4, overlap=30), **TOL)
    info = sol.stats["schwarz"]
    rounds = info["rounds"]
    assert info["bytes_exchanged"] == (rounds - 1) * 3 * (2 * 3 * 8)
    assert info["local_solves"] == sum(w["solves"] for w in info["per_window"].values())
    assert sol.stats.iterations == info["sweeps"] and info["engine"] == "serial"


def test_gradient_of_a_schwarz_solution():
    prob = problems.gru_64(T=400).problem()
    g = np.random.default_rng(0).normal(size=(400, 64))
    ref = ps.solve(prob, ps.Sequential(), **TOL).vjp(g)
    for inner in (ps.Sequential(), ps.DEER(), ps.NewtonKrylov()):
        sol = ps.solve(prob, ps.Schwarz(windows=4, overlap=40, inner=inner), **TOL)
        got = sol.vjp(g)
        for k in ref.params:
            np.testing.assert_allclose(got.params[k], ref.params[k], rtol=1e-6, atol=1e-9)
        np.testing.assert_allclose(got.h0, ref.h0, rtol=1e-6, atol=1e-9)


def test_inner_failure_is_reported_with_finite_states():
    m, h0, _ = problems.chaotic_clipped_3x50(T=600)
    prob = ps.RecurrenceProblem(m, h0, T=600)
    sol = ps.solve(prob, ps.Schwarz(windows=3, overlap=10, inner=ps.DEER()), maxiter=5)
    assert not ps.is_successful(sol)
    assert np.isfinite(sol.states).all()
    fb = ps.solve(prob, ps.Schwarz(windows=3, overlap=10, inner=ps.DEER()), maxiter=5,
                  fallback="sequential")
    assert ps.is_successful(fb) and "fallback" in fb.stats.extra


def test_float32_preserved():
    prob = problems.shplrnn_3x50(T=1000, dtype=np.float32).problem()
    ref = ps.solve(prob, ps.Sequential()).states
    sol = ps.solve(prob, ps.Schwarz(windows=4, overlap=50))
    assert sol.states.dtype == np.float32 and ps.is_successful(sol)
    np.testing.assert_allclose(sol.states, ref, atol=1e-5)
