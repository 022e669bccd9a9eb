"""Beyond memory in one process: DEER in windows, the states written into ``out=`` (a memmap
too), the transposed scan window by window, and memory-mapped inputs read without a copy."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pitsolve as ps
from pitsolve.adjoint import ScanAdjoint
from pitsolve.testing import fake_cupy, problems

from .test_deer import contracting_model, contracting_problems

TOL = dict(rtol=1e-10, atol=1e-12, maxiter=200)
SQRT_EPS = float(np.sqrt(np.finfo(np.float64).eps))


def _close_to(sol, ref):
    """States within what the tolerance allows (contraction ≤ 0.7: error ≤ tol / 0.3)."""
    scale = 1 + np.abs(ref).max()
    np.testing.assert_allclose(sol.states, ref, atol=1e-9 * scale)


def _rel_equal(got, want, rtol):
    """max |got - want| ≤ rtol · max |want| (arrays or Params)."""
    for k in (want if hasattr(want, "keys") else [None]):
        a, b = (got, want) if k is None else (got[k], want[k])
        scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-300)
        assert float(np.max(np.abs(a - b), initial=0.0)) <= rtol * scale, k


def _memmap(tmp_path, shape, name="states.npy", dtype=np.float64):
    return np.lib.format.open_memmap(tmp_path / name, mode="w+", dtype=dtype, shape=shape)


# -- the forward solve in windows ---------------------------------------------------------------


@pytest.mark.parametrize("jacobian", ["full", "diagonal"])
@given(prob=contracting_problems(), window=st.one_of(st.integers(1, 25), st.just(10**6)))
@settings(max_examples=30, deadline=None)
def test_windowed_deer_equals_one_window_and_the_sequential_loop(jacobian, prob, window):
    ref = ps.solve(prob, ps.Sequential()).states
    whole = ps.solve(prob, ps.DEER(jacobian=jacobian), **TOL)
    sol = ps.solve(prob, ps.DEER(jacobian=jacobian, window=window), **TOL)
    assert ps.is_successful(sol) and ps.is_successful(whole), sol.retcode
    _close_to(sol, ref)
    np.testing.assert_allclose(sol.states, whole.states, atol=2e-9 * (1 + np.abs(ref).max()))
    assert sol.converged.shape == prob.batch_shape and sol.converged.all()
    L = min(window, prob.T)
    assert sol.stats["window"] == L and sol.stats["windows"] == -(-prob.T // L)
    if L < prob.T:  # the Jacobians are not kept (they would be T-sized); the adjoint windows
        assert sol.jacobians is None and sol.adjoint.window == L
    else:
        assert sol.adjoint.window is None


@pytest.mark.parametrize("alg", [ps.DEER(window=3, damping=ps.LineSearch()),
                                 ps.DEER(window=7, damping=ps.LevenbergMarquardt()),
                                 ps.DEER(window=4, jacobian="none")], ids=repr)
@given(prob=contracting_problems())
@settings(max_examples=10, deadline=None)
def test_damped_and_picard_windows_equal_the_sequential_loop(alg, prob):
    sol = ps.solve(prob, alg, **TOL)
    assert ps.is_successful(sol), sol.retcode
    _close_to(sol, ps.solve(prob, ps.Sequential()).states)


def test_each_window_starts_from_the_end_of_the_one_before():
    """Stepping by hand: the windows before the active one are converged and frozen; maxiter
    counts per window; a failure keeps the converged windows and finite states."""
    model, n_in = contracting_model("gru", 3, 0)
    rng = np.random.default_rng(0)
    prob = ps.RecurrenceProblem(model, rng.normal(size=3), inputs=rng.normal(size=(60, n_in)))
    ref = ps.solve(prob, ps.Sequential()).states
    state = ps.init(prob, ps.DEER(window=10))
    while not state.done and state.origin < 30:
        ps.step(state)
    assert state.origin == 30 and state.stop == 40
    np.testing.assert_allclose(state.h[:30], ref[:30], atol=1e-7)  # (default rtol 1e-8)
    ok = ps.solve(prob, ps.DEER(window=10), maxiter=4)
    assert ps.is_successful(ok) and ok.stats.iterations > 4  # 4 per window, not in total
    bad = ps.solve(prob, ps.DEER(jacobian="none", window=10), maxiter=2, rtol=1e-14, atol=0.0)
    assert bad.retcode is ps.ReturnCode.MaxIters and not bad.converged.any()
    assert np.isfinite(bad.states).all()


def test_max_bytes_chooses_the_window_from_the_measured_work():
    prob = problems.shplrnn_3x50(T=1000).problem()
    alg = ps.DEER()
    per_step = alg.work_bytes_per_step(prob)
    assert per_step == (9 + 5 * 3) * 8  # J (D²) and five D-vectors
    assert ps.DEER(jacobian="diagonal").work_bytes_per_step(prob) == (3 + 5 * 3) * 8
    assert ps.DEER(max_bytes=300 * per_step).window_length(prob) == 250  # 4 windows of 250
    assert ps.DEER(max_bytes=1).window_length(prob) == 1
    assert alg.window_length(prob) == 1000 and ps.DEER(window=64).window_length(prob) == 64
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="window"):
            ps.DEER(window=bad)
    for bad in (0, -1.0, "auto", True):
        with pytest.raises(ValueError, match="max_bytes"):
            ps.DEER(max_bytes=bad)
    with pytest.raises(ValueError, match="window"):
        ScanAdjoint(window=0)


VARIANTS = {
    "DEER": ps.DEER(), "quasi-DEER": ps.DEER(jacobian="diagonal"),
    "Picard": ps.DEER(jacobian="none"), "DEER+LS": ps.DEER(damping=ps.LineSearch()),
    "DEER+LM": ps.DEER(damping=ps.LevenbergMarquardt()),
    "quasi-DEER+LM": ps.DEER(jacobian="diagonal", damping=ps.LevenbergMarquardt()),
}


@pytest.mark.parametrize("name", VARIANTS)
@pytest.mark.parametrize("out", [False, True])
def test_work_bytes_per_step_bounds_what_a_window_holds(name, out):
    """``stats.peak_bytes`` (every array the solve holds, the callees' temporaries included)
    less the trajectory is what :meth:`DEER.work_bytes_per_step` estimates for a window."""
    alg = VARIANTS[name]
    T, L = 16_000, 2000
    prob = problems.shplrnn_3x50(T=T).problem()
    alg = ps.DEER(jacobian=alg.jacobian, damping=alg.damping, window=L)
    for _ in range(3):  # compile, then the calls' temporaries are measured (once per kind)
        sol = ps.solve(prob, alg, out=np.empty((T, 3)) if out else None)
    assert ps.is_successful(sol) and sol.stats["windows"] == T // L
    trajectory = 0 if out else (T + 1) * 3 * 8  # (the caller's out is not counted)
    work = sol.stats.peak_bytes - trajectory
    estimate = alg.work_bytes_per_step(prob) * L
    assert 0.6 * estimate <= work <= estimate, (work, estimate)


# -- out= ---------------------------------------------------------------------------------------


def _driven_problem(T=50):
    model, n_in = contracting_model("elman", 3, 1)
    rng = np.random.default_rng(2)
    return ps.RecurrenceProblem(model, rng.normal(size=(2, 3)),
                                inputs=rng.normal(size=(2, T, n_in)))


@pytest.mark.parametrize("alg", [ps.DEER(), ps.DEER(window=7), ps.DEER(window=1),
                                 ps.DEER(window=6, jacobian="diagonal"),
                                 ps.DEER(window=9, damping=ps.LineSearch()),
                                 ps.DEER(window=9, damping=ps.LevenbergMarquardt()),
                                 ps.NewtonKrylov(window=11), ps.Sequential()], ids=repr)
@pytest.mark.parametrize("kind", ["array", "memmap"])
def test_out_receives_the_states(alg, kind, tmp_path, monkeypatch):
    monkeypatch.setattr("pitsolve.algorithms._memory.OUT_CHUNK_BYTES", 7 * 2 * 3 * 8)
    prob = _driven_problem()
    want = ps.solve(prob, alg, **TOL)
    out = np.full((2, 50, 3), np.nan) if kind == "array" else _memmap(tmp_path, (2, 50, 3))
    sol = ps.solve(prob, alg, out=out, **TOL)
    assert ps.is_successful(sol) and sol.states is out
    np.testing.assert_allclose(np.asarray(out), want.states, rtol=1e-13, atol=1e-14)
    g = np.random.default_rng(3).normal(size=out.shape)
    got, ref = sol.vjp(g), want.vjp(g)
    _rel_equal(got.params, ref.params, 1e-11)
    _rel_equal(got.inputs, ref.inputs, 1e-11)


def test_out_for_the_linear_scan_in_chunks(monkeypatch):
    monkeypatch.setattr("pitsolve.algorithms._memory.OUT_CHUNK_BYTES", 5 * 2 * 3 * 8)
    rng = np.random.default_rng(0)
    A = rng.uniform(-0.9, 0.9, (2, 37, 3, 3)) / 3
    prob = ps.LinearRecurrenceProblem(A, rng.normal(size=(2, 37, 3)), np.ones((2, 3)))
    for alg in (ps.ParallelScan(), ps.ParallelScan(chunk_size=2), ps.Sequential()):
        out = np.empty((2, 37, 3))
        sol = ps.solve(prob, alg, out=out)
        assert sol.states is out
        np.testing.assert_allclose(out, ps.solve(prob, alg).states, rtol=1e-12, atol=1e-13)


def test_a_bad_out_is_an_error_naming_it(tmp_path):
    prob = _driven_problem()
    np.save(tmp_path / "ro.npy", np.zeros((2, 50, 3)))
    cases = [
        (np.empty((2, 49, 3)), ValueError, "shape"),
        (np.empty((50, 3)), ValueError, "shape"),
        (np.empty((2, 50, 3), dtype=np.float32), TypeError, "dtype"),
        (np.load(tmp_path / "ro.npy", mmap_mode="r"), ValueError, "writeable"),
        (np.broadcast_to(np.zeros(3), (2, 50, 3)), ValueError, "writeable"),
        ([[0.0] * 3] * 50, TypeError, "array"),
    ]
    for out, err, what in cases:
        with pytest.raises(err, match=f"out must .*{what}"):
            ps.solve(prob, ps.DEER(), out=out)
    with pytest.raises(ValueError, match="out: Schwarz does not write"):
        ps.solve(prob, ps.Schwarz(windows=2, overlap=4), out=np.empty((2, 50, 3)))
    with fake_cupy.installed() as cp:  # the array type must be the problem's
        dev = ps.RecurrenceProblem(prob.model, cp.asarray(prob.h0), inputs=cp.asarray(prob.inputs))
        with pytest.raises(TypeError, match="out must be a CuPy array"):
            ps.solve(dev, ps.DEER(), out=np.empty((2, 50, 3)))


def test_windows_and_out_on_cupy_arrays():
    """No host array meets a device array: the windowed solve, out= and the windowed adjoint
    on the strict CuPy stand-in give the NumPy backend's numbers."""
    prob = _driven_problem(T=40)
    ref = ps.solve(prob, ps.DEER(window=9), backend="numpy", **TOL)
    g = np.random.default_rng(4).normal(size=(2, 40, 3))
    ref_cot = ref.vjp(g)
    with fake_cupy.installed() as cp:
        dev = ps.RecurrenceProblem(prob.model, cp.asarray(prob.h0), inputs=cp.asarray(prob.inputs))
        out = cp.asarray(np.zeros((2, 40, 3)))
        sol = ps.solve(dev, ps.DEER(window=9), out=out, **TOL)
        assert ps.is_successful(sol) and sol.states is out
        np.testing.assert_allclose(out.get(), ref.states, rtol=1e-12, atol=1e-14)
        cot = sol.vjp(cp.asarray(g))
        _rel_equal(cot.params.flatten().get(), ref_cot.params.flatten(), 1e-11)
        _rel_equal(cot.h0.get(), ref_cot.h0, 1e-11)
        _rel_equal(cot.inputs.get(), ref_cot.inputs, 1e-11)


# -- the adjoint in windows ---------------------------------------------------------------------


@given(prob=contracting_problems(), window=st.integers(1, 25), seed=st.integers(0, 2**31))
@settings(max_examples=40, deadline=None)
def test_windowed_adjoint_equals_the_unwindowed_one(prob, window, seed):
    """On the same states, the transposed scan window by window (Jacobians evaluated per
    window, J_aᵀλ_a carried back) gives the one-scan cotangents to round-off."""
    sol = ps.solve(prob, ps.DEER(), **TOL)
    assert ps.is_successful(sol)
    g = np.random.default_rng(seed).normal(size=sol.states.shape)
    ref = sol.vjp(g)
    got = ScanAdjoint(window=window).vjp(sol, g)
    _rel_equal(got.params, ref.params, 1e-12)
    _rel_equal(got.h0, ref.h0, 1e-12)
    if prob.inputs is None:
        assert got.inputs is None
    else:
        _rel_equal(got.inputs, ref.inputs, 1e-12)


def _loss(model, h0, x, g):
    p = ps.RecurrenceProblem(model, h0, inputs=x, T=g.shape[-2])
    return float(np.sum(g * ps.solve(p, ps.Sequential()).states))


def _fd_check(d_analytic, fun, x, v, scale):
    """``d_analytic ≈ (fun(x + εv) − fun(x − εv)) / 2ε``, ``ε = √eps·max(1, |x|)``; the loss's
    rounding (about eps·``scale``) divided by ε is allowed, and O(ε²) truncation."""
    eps = SQRT_EPS * max(1.0, float(np.max(np.abs(x), initial=0.0)))
    d_fd = (fun(x + eps * v) - fun(x - eps * v)) / (2 * eps)
    assert abs(d_analytic - d_fd) <= 5e-8 * scale + 1e-7 * abs(d_fd), (d_analytic, d_fd)


@pytest.mark.parametrize("kind", ["elman", "shplrnn", "gru"])
@pytest.mark.parametrize("window", [1, 6, 40])
def test_windowed_gradient_matches_finite_differences(kind, window):
    model, n_in = contracting_model(kind, 3, 5)
    rng = np.random.default_rng(6)
    h0 = rng.normal(size=(2, 3))
    x = rng.normal(size=(2, 40, n_in)) if n_in else None
    prob = ps.RecurrenceProblem(model, h0, inputs=x, T=40)
    g = rng.normal(size=(2, 40, 3))
    sol = ps.solve(prob, ps.DEER(window=window), rtol=1e-12, atol=1e-14, maxiter=200)
    assert ps.is_successful(sol)
    assert sol.adjoint.window == (window if window < 40 else None)
    cot = sol.vjp(g)
    scale = max(1.0, float(np.sum(np.abs(g * sol.states))))
    theta = model.params.flatten()
    v = rng.normal(size=theta.shape)
    _fd_check(float(cot.params.flatten() @ v),
              lambda th: _loss(model.replace(model.params.unflatten(th)), h0, x, g),
              theta, v, scale)
    v = rng.normal(size=h0.shape)
    _fd_check(float(np.sum(cot.h0 * v)), lambda h: _loss(model, h, x, g), h0, v, scale)
    if x is not None:
        v = rng.normal(size=x.shape)
        _fd_check(float(np.sum(cot.inputs * v)), lambda xx: _loss(model, h0, xx, g), x, v,
                  scale)


def test_the_windowed_adjoint_reads_a_memmapped_trajectory(tmp_path):
    """The benchmark's route at small scale: DEER(max_bytes) into a memmap, the gradient of a
    broadcast cotangent, equal to the in-memory solve's."""
    prob = problems.shplrnn_3x50(T=30_000).problem()
    alg = ps.DEER(max_bytes=2**20)
    out = _memmap(tmp_path, (30_000, 3))
    sol = ps.solve(prob, alg, out=out)
    assert ps.is_successful(sol) and sol.states is out and sol.stats["windows"] > 4
    g = np.broadcast_to(np.ones(3), out.shape)  # read-only, no memory of its own
    whole = ps.solve(prob, ps.DEER())
    np.testing.assert_allclose(np.asarray(out), whole.states, atol=1e-9)
    _rel_equal(sol.vjp(g).params, whole.vjp(g).params, 1e-10)


# -- memory-mapped inputs -----------------------------------------------------------------------


def test_memmapped_inputs_are_read_not_copied(tmp_path, monkeypatch):
    monkeypatch.setattr("pitsolve._validation._FINITE_CHUNK", 1000)  # checked in chunks
    model, n_in = contracting_model("elman", 3, 1)
    rng = np.random.default_rng(8)
    T = 20_000
    np.save(tmp_path / "x.npy", rng.normal(size=(T, n_in)))
    x = np.load(tmp_path / "x.npy", mmap_mode="r")
    h0 = rng.normal(size=3)
    tracemalloc.start()
    try:
        prob = ps.RecurrenceProblem(model, h0, inputs=x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert prob.inputs is x  # neither converted nor copied
    assert peak < x.nbytes / 10, (peak, x.nbytes)
    out = _memmap(tmp_path, (T, 3))
    sol = ps.solve(prob, ps.DEER(window=3000), out=out)
    assert ps.is_successful(sol)
    ref = ps.solve(ps.RecurrenceProblem(model, h0, inputs=np.array(x)), ps.Sequential()).states
    _close_to(sol, ref)
    # a non-finite value far into the file is found, at its index
    bad = np.array(x)
    bad[12_345, 1] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(ValueError, match=r"inputs contains non-finite .* \(12345, 1\)"):
        ps.RecurrenceProblem(model, h0, inputs=np.load(tmp_path / "bad.npy", mmap_mode="r"))
