"""Newton–Krylov: linearise-once products, time windows and the memory they bound."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pitsolve as ps
from pitsolve.models.base import Linearization, linearize
from pitsolve.testing import problems

from .test_deer import contracting_model, contracting_problems

# -- the linearization: the same products as jvp / vjp_h ---------------------------------------

MODELS = {
    "elman": lambda: ps.models.Elman(6, 3, seed=1),
    "gru": lambda: ps.models.GRU(5, 2, seed=2),
    "shplrnn": lambda: ps.models.ShPLRNN(latent=4, hidden=9, seed=3),
    "alrnn": lambda: ps.models.ALRNN(latent=5, relu_units=2, seed=4),
}


@pytest.mark.parametrize("name", sorted(MODELS))
@given(seed=st.integers(0, 2**31), T=st.integers(1, 9),
       batch=st.lists(st.integers(1, 3), max_size=2))
@settings(max_examples=25, deadline=None)
def test_linearization_equals_jvp_and_vjp(name, seed, T, batch):
    model = MODELS[name]()
    D, N = model.state_dim, model.input_dim
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(*batch, T, D))
    x = rng.normal(size=(*batch, T, N)) if N else None
    v, u = rng.normal(size=h.shape), rng.normal(size=h.shape)
    lin = model.linearize(h, x)
    np.testing.assert_allclose(lin.jvp(v), model.jvp(h, x, v), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(lin.vjp(u), model.vjp_h(h, x, u), rtol=1e-12, atol=1e-12)
    out = np.full_like(h, np.nan)
    assert lin.jvp(v, out=out) is out
    np.testing.assert_allclose(out, model.jvp(h, x, v), rtol=1e-12, atol=1e-12)
    assert lin.vjp(u, out=out) is out
    np.testing.assert_allclose(out, model.vjp_h(h, x, u), rtol=1e-12, atol=1e-12)
    # applied twice: nothing cached is overwritten by a product
    np.testing.assert_allclose(lin.jvp(u), model.jvp(h, x, u), rtol=1e-12, atol=1e-12)


def test_elman_linearization_caches_and_writes_in_place():
    model = ps.models.Elman(4, 2, seed=0)
    rng = np.random.default_rng(0)
    h, x = rng.normal(size=(7, 4)), rng.normal(size=(7, 2))
    lin = model.linearize(h, x)
    assert type(lin).__name__ == "ElmanLinearization"
    y = model.f(h, x)
    np.testing.assert_allclose(lin.s, 1 - y * y, rtol=1e-15)
    # a non-contiguous output view (as the solver passes) is written in place
    out = np.zeros((8, 4))
    lin.jvp(h, out=out[1:])
    np.testing.assert_allclose(out[1:], model.jvp(h, x, h), rtol=1e-12)
    assert not out[0].any()


def test_duck_typed_models_get_the_default_linearization():
    class Bare:  # the protocol without linearize (and without subclassing Model)
        state_dim, input_dim = 2, 0

        def jvp(self, h, x, v):
            return 2.0 * v

        def vjp_h(self, h, x, u):
            return 3.0 * u

    lin = linearize(Bare(), np.zeros((3, 2)))
    assert isinstance(lin, Linearization)
    np.testing.assert_array_equal(lin.jvp(np.ones((3, 2))), 2.0)
    np.testing.assert_array_equal(lin.vjp(np.ones((3, 2)), out=np.empty((3, 2))), 3.0)


def test_check_derivatives_checks_the_linearization():
    report = ps.testing.check_derivatives(ps.models.Elman(5, 2, seed=0))
    assert report["linearize"].passed

    class Wrong(ps.models.Elman):
        def linearize(self, h, x=None):
            lin = super().linearize(h, x)
            lin.s = 2 * lin.s
            return lin

    bad = ps.testing.check_derivatives(Wrong(5, 2, seed=0), raise_on_error=False)
    assert not bad["linearize"].passed and bad["jvp"].passed


# -- windows ----------------------------------------------------------------------------------


@given(prob=contracting_problems(), window=st.integers(1, 25), freeze=st.booleans())
@settings(max_examples=40, deadline=None)
def test_windowed_solve_converges_to_sequential(prob, window, freeze):
    ref = ps.solve(prob, ps.Sequential())
    alg = ps.NewtonKrylov(window=window)
    sol = ps.solve(prob, alg, rtol=1e-10, atol=1e-12, maxiter=200, freeze_converged=freeze)
    assert ps.is_successful(sol), sol.retcode
    scale = 1 + np.abs(ref.states).max()
    np.testing.assert_allclose(sol.states, ref.states, atol=1e-9 * scale)
    assert sol.converged.shape == prob.batch_shape and sol.converged.all()
    w = min(window, prob.T)
    assert sol.stats["window"] == w and sol.stats["windows"] == -(-prob.T // w)


def test_windows_meet_the_tolerance_at_every_step():
    """The stopping test of each window is the whole-trajectory one, boundaries included."""
    model, h0, x = problems.elman_256(T=300)
    model = ps.models.Elman(256, 8, params=model.params)
    prob = ps.RecurrenceProblem(model, h0, inputs=x)
    sol = ps.solve(prob, ps.NewtonKrylov(window=64))
    assert ps.is_successful(sol) and sol.stats["windows"] == 5
    prev = np.concatenate([h0[None], sol.states[:-1]])
    r = np.abs(sol.states - model.f(prev, x)).max(axis=-1)
    assert (r <= 1e-10 + 1e-8 * np.abs(sol.states).max(axis=-1)).all()
    whole = ps.solve(prob, ps.NewtonKrylov(max_bytes=None))
    assert whole.stats["windows"] == 1
    np.testing.assert_allclose(sol.states, whole.states, atol=1e-7)


def test_max_bytes_chooses_the_window():
    prob = problems.elman_256(T=1000).problem()
    alg = ps.NewtonKrylov(restart=5, max_bytes=100 * 2**10 * 16)
    per_step = (5 + 1 + 10) * 256 * 8
    assert alg.work_bytes_per_step(prob) == per_step
    assert alg.window_length(prob) == 100 * 2**10 * 16 // per_step == 50
    # the fewest windows that fit, of equal length: 1000 steps at ≤ 300 → 4 windows of 250
    assert ps.NewtonKrylov(restart=5, max_bytes=300 * per_step).window_length(prob) == 250
    assert ps.NewtonKrylov(restart=5, max_bytes=999 * per_step).window_length(prob) == 500
    assert ps.NewtonKrylov(max_bytes=1).window_length(prob) == 1
    assert ps.NewtonKrylov(max_bytes=None).window_length(prob) == 1000
    assert ps.NewtonKrylov(window=64, max_bytes=1).window_length(prob) == 64
    assert ps.NewtonKrylov(window=5000).window_length(prob) == 1000


def test_maxiter_counts_per_window_and_failure_keeps_converged_windows():
    model, n_in = contracting_model("gru", 3, 0)
    rng = np.random.default_rng(0)
    prob = ps.RecurrenceProblem(model, rng.normal(size=3), inputs=rng.normal(size=(60, n_in)))
    ref = ps.solve(prob, ps.Sequential()).states
    ok = ps.solve(prob, ps.NewtonKrylov(window=10), maxiter=8)
    assert ps.is_successful(ok) and ok.stats.iterations > 8  # 8 per window, not in total
    # one Newton step per window cannot reach 1e-14: the first window fails, the rest is the
    # initial guess (finite), and nothing is reported converged
    sol = ps.solve(prob, ps.NewtonKrylov(window=10), maxiter=1, rtol=1e-14, atol=0.0)
    assert sol.retcode == ps.ReturnCode.MaxIters and not sol.converged.any()
    assert np.isfinite(sol.states).all()
    np.testing.assert_array_equal(sol.states[10:], np.broadcast_to(prob.h0, (50, 3)))
    # stepping by hand: the windows before the active one are converged and frozen
    state = ps.init(prob, ps.NewtonKrylov(window=10))
    while not state.done and state.origin < 30:
        ps.step(state)
    assert state.origin == 30 and state.stop == 40
    np.testing.assert_allclose(state.h[: state.origin], ref[: state.origin], atol=1e-7)


def test_invalid_window_options():
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="window"):
            ps.NewtonKrylov(window=bad)
    for bad in (0, -1.0, "auto", True):
        with pytest.raises(ValueError, match="max_bytes"):
            ps.NewtonKrylov(max_bytes=bad)


# -- memory -----------------------------------------------------------------------------------


def _traced_solve(prob, alg):
    tracemalloc.start()
    try:
        sol = ps.solve(prob, alg, rtol=1e-6)
        return sol, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_windows_make_the_work_arrays_independent_of_T():
    """With a window, what NumPy allocates beyond the trajectory (traced) does not grow with T,
    and ``stats.peak_bytes`` counts it (see also tests/test_memory.py)."""
    D, restart, window = 96, 3, 100
    model = ps.models.Elman(D, 4, seed=0)
    work = {}
    for T in (400, 800):
        x = np.random.default_rng(1).normal(size=(T, 4))
        prob = ps.RecurrenceProblem(model, np.zeros(D), inputs=x)
        alg = ps.NewtonKrylov(restart=restart, window=window)
        for _ in range(2):  # compile, then measure the calls' temporaries (untraced)
            ps.solve(prob, alg, rtol=1e-6)
        sol, traced = _traced_solve(prob, alg)
        assert ps.is_successful(sol) and sol.stats["windows"] == T // window
        assert 0.9 * traced <= sol.stats.peak_bytes <= 1.1 * traced
        work[T] = traced - T * D * 8
    # the traced work arrays are the same size at both T (within allocator noise)
    assert abs(work[800] - work[400]) <= 0.1 * work[400]


def test_default_budget_bounds_the_work_at_large_T():
    prob = problems.elman_256(T=100_000).problem()
    alg = ps.NewtonKrylov()
    L = alg.window_length(prob)
    assert L * alg.work_bytes_per_step(prob) <= alg.max_bytes < 2**30
    assert 1000 < L < 100_000


@pytest.mark.parametrize("name", ["elman", "gru"])
@pytest.mark.parametrize("window", [None, 37, 100])
def test_windowed_matrix_free_adjoint_equals_bptt(name, window):
    """The matrix-free adjoint runs in the solve's windows, last to first, and still gives the
    sequential BPTT cotangents (params, h0, inputs)."""
    model = MODELS[name]()
    rng = np.random.default_rng(7)
    h0 = 0.3 * rng.normal(size=(2, model.state_dim))
    x = rng.normal(size=(2, 230, model.input_dim))
    prob = ps.RecurrenceProblem(model, h0, inputs=x)
    g = rng.normal(size=(2, 230, model.state_dim))
    sol = ps.solve(prob, ps.NewtonKrylov(window=window), rtol=1e-11, atol=1e-13)
    assert ps.is_successful(sol)
    if window is not None:
        assert sol.stats["windows"] == -(-230 // window)
    got, ref = sol.vjp(g), ps.solve(prob, ps.Sequential()).vjp(g)
    for k in ref.params:
        np.testing.assert_allclose(got.params[k], ref.params[k], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(got.h0, ref.h0, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(got.inputs, ref.inputs, rtol=1e-7, atol=1e-9)
