"""DEER, quasi-DEER, Picard, line search and Newton–Krylov against the sequential reference."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import pitsolve as ps
from pitsolve.testing import problems

from . import naive

ALGORITHMS = [
    ps.DEER(),
    ps.DEER(jacobian="diagonal"),
    ps.DEER(jacobian="none"),
    ps.DEER(damping=ps.LineSearch()),
    ps.DEER(jacobian="diagonal", damping=ps.LineSearch()),
    ps.DEER(damping=ps.LevenbergMarquardt()),
    ps.DEER(jacobian="diagonal", damping=ps.LevenbergMarquardt(lam=10.0)),
    ps.DEER(backend="numpy", chunk_size=3),
    ps.NewtonKrylov(),
    ps.NewtonKrylov(forcing="constant", preconditioner="none", restart=5),
]


def contracting_model(kind: str, D: int, seed: int, dtype=np.float64):
    """A model whose Jacobians have 2-norm below about 0.7 everywhere (memory of a few steps)."""
    rng = np.random.default_rng(seed)
    if kind == "elman":
        W = rng.normal(size=(D, D))
        W *= 0.7 / np.linalg.norm(W, 2)
        params = {"W": W, "U": rng.normal(size=(D, 2)), "b": rng.normal(size=D)}
        return ps.models.Elman(D, 2, params=params, dtype=dtype), 2
    if kind == "shplrnn":
        L = 2 * D + 1
        W1 = rng.normal(size=(D, L))
        W2 = rng.normal(size=(L, D))
        scale = 0.35 / (np.linalg.norm(W1, 2) * np.linalg.norm(W2, 2))
        params = {"a": rng.uniform(0, 0.3, D), "W1": W1 * np.sqrt(scale),
                  "W2": W2 * np.sqrt(scale), "h1": rng.normal(size=D), "h2": rng.normal(size=L)}
        return ps.models.ShPLRNN.from_params(params, dtype=dtype), 0
    if kind == "gru":
        return ps.models.GRU(D, 2, seed=seed, dtype=dtype), 2
    raise ValueError(kind)


@st.composite
def contracting_problems(draw, dtypes=(np.float64,), kinds=("elman", "shplrnn", "gru")):
    kind = draw(st.sampled_from(kinds))
    D = draw(st.integers(1, 5))
    T = draw(st.integers(1, 60))
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    dtype = draw(st.sampled_from(dtypes))
    seed = draw(st.integers(0, 2**31))
    model, n_in = contracting_model(kind, D, seed, dtype)
    rng = np.random.default_rng(seed + 1)
    h0 = rng.normal(size=(*batch, D)).astype(dtype)
    x = rng.normal(size=(*batch, T, n_in)).astype(dtype) if n_in else None
    return ps.RecurrenceProblem(model, h0, inputs=x, T=T)


@pytest.mark.parametrize("alg", ALGORITHMS, ids=repr)
@given(prob=contracting_problems())
def test_converges_to_sequential(alg, prob):
    ref = ps.solve(prob, ps.Sequential())
    sol = ps.solve(prob, alg, rtol=1e-10, atol=1e-12, maxiter=200)
    assert ps.is_successful(sol), sol.retcode
    assert sol.states.shape == ref.states.shape and sol.states.dtype == prob.dtype
    # residual ≤ tol and contraction ≤ 0.7 bound the error by tol / (1 − 0.7)
    scale = 1 + np.abs(ref.states).max()
    np.testing.assert_allclose(sol.states, ref.states, atol=1e-9 * scale)
    assert sol.converged.shape == prob.batch_shape and sol.converged.all()


@pytest.mark.parametrize("alg", [ps.DEER(), ps.DEER(jacobian="diagonal"), ps.NewtonKrylov()],
                         ids=repr)
@given(prob=contracting_problems(dtypes=(np.float32,)))
def test_float32_is_preserved_and_accurate(alg, prob):
    ref = ps.solve(prob, ps.Sequential())
    sol = ps.solve(prob, alg, maxiter=200)
    assert ps.is_successful(sol), sol.retcode
    assert sol.states.dtype == np.float32
    np.testing.assert_allclose(sol.states, ref.states, atol=1e-4 * (1 + np.abs(ref.states).max()))


def test_sequential_equals_python_loop():
    model, n_in = contracting_model("elman", 3, 0)
    rng = np.random.default_rng(0)
    h0, x = rng.normal(size=(2, 3)), rng.normal(size=(2, 17, n_in))
    sol = ps.solve(ps.RecurrenceProblem(model, h0, inputs=x), ps.Sequential())
    np.testing.assert_allclose(sol.states, naive.recurrence(model.f, h0, x, 17), atol=1e-13)
    sol_np = ps.solve(ps.RecurrenceProblem(model, h0, inputs=x), ps.Sequential(backend="numpy"))
    np.testing.assert_allclose(sol_np.states, sol.states, atol=1e-13)


@pytest.mark.parametrize("jacobian", ["full", "diagonal", "none"])
def test_first_k_steps_exact_after_k_iterations(jacobian):
    """Causality: after k iterations h_1..h_k are exact, for any Ĵ (even from a bad guess)."""
    m, h0, _ = problems.chaotic_clipped_3x50(T=40)
    prob = ps.RecurrenceProblem(m, h0, T=40)
    ref = ps.solve(prob, ps.Sequential()).states
    state = ps.init(prob, ps.DEER(jacobian=jacobian), freeze_converged=False, maxiter=10)
    for k in range(1, 6):
        ps.step(state)
        if state.done:
            break
        np.testing.assert_allclose(state.h[:k], ref[:k], rtol=1e-10, atol=1e-10)


def _correct_prefix(states, ref, tol=1e-6):
    bad = np.abs(states - ref).max(axis=-1) > tol
    return int(np.argmax(bad)) if bad.any() else bad.shape[-1]


def test_chaotic_plain_deer_fails_cleanly():
    """On bounded chaos plain DEER ends with a failure code and finite states (best iterate)."""
    m, h0, _ = problems.chaotic_clipped_3x50(T=2000)
    prob = ps.RecurrenceProblem(m, h0, T=2000)
    ref = ps.solve(prob, ps.Sequential()).states
    initial = None
    final = {}
    for alg in [ps.DEER(), ps.DEER(jacobian="diagonal"), ps.DEER(damping=ps.LineSearch()),
                ps.DEER(damping=ps.LevenbergMarquardt()), ps.NewtonKrylov()]:
        sol = ps.solve(prob, alg, maxiter=30)
        assert not ps.is_successful(sol), alg
        assert np.isfinite(sol.states).all(), alg
        assert len(str(sol.retcode)) > 40
        # never success on a wrong trajectory: a success code would imply a correct prefix
        assert _correct_prefix(sol.states, ref) < 2000
        initial = sol.stats.residual_history[0]
        final[repr(getattr(alg, "damping", alg))] = min(sol.stats.residual_history)
    # plain DEER overflows at once and keeps the initial guess; Levenberg–Marquardt descends
    assert final["None"] == initial
    assert final["LevenbergMarquardt(lam=1.0, increase=10.0, decrease=0.3, lam_min=1e-08, "
                 "lam_max=100000000.0)"] < 0.9 * initial


def test_fallback_and_throw():
    m, h0, _ = problems.chaotic_clipped_3x50(T=500)
    prob = ps.RecurrenceProblem(m, h0, T=500)
    sol = ps.solve(prob, ps.DEER(), fallback="sequential")
    assert ps.is_successful(sol)
    assert sol.stats["fallback"]["retcode"] in ("NonFinite", "Diverged", "MaxIters")
    np.testing.assert_array_equal(sol.states, ps.solve(prob, ps.Sequential()).states)
    with pytest.raises(ps.SolverError) as info:
        ps.solve(prob, ps.DEER(), throw=True)
    assert np.isfinite(info.value.solution.states).all()


def test_maxiter_returns_best_iterate_and_warm_start():
    m, h0, x = problems.gru_64(T=300)
    prob = ps.RecurrenceProblem(m, h0, inputs=x)
    sol = ps.solve(prob, ps.DEER(jacobian="none"), maxiter=2)
    assert sol.retcode is ps.ReturnCode.MaxIters and np.isfinite(sol.states).all()
    assert sol.stats.iterations == 2 and len(sol.stats.residual_history) == 3
    ref = ps.solve(prob, ps.Sequential()).states
    warm = ps.solve(prob, ps.DEER(), h_init=ref)
    assert ps.is_successful(warm) and warm.stats.iterations == 0 and warm.stats.scans == 0
    with pytest.raises(ValueError, match="h_init must have shape"):
        ps.solve(prob, ps.DEER(), h_init=ref[:10])


def test_statistics_are_recorded():
    m, h0, x = problems.gru_64(T=200)
    prob = ps.RecurrenceProblem(m, h0, inputs=x)
    sol = ps.solve(prob, ps.NewtonKrylov())
    s = sol.stats
    assert ps.is_successful(sol)
    assert s.iterations >= 1 and s.krylov_iterations >= s.iterations
    assert s.jvp_evals >= s.krylov_iterations and s.function_evals == s.iterations + 1
    assert s.peak_bytes > 0 and s.wall_time > 0
    assert s.residual_history[-1] < s.residual_history[0]
    d = ps.solve(prob, ps.DEER()).stats
    assert d.scans == d.iterations and d.jacobian_evals == d.iterations + 1


def test_freeze_converged_skips_the_prefix_without_changing_the_answer():
    m, h0, x = problems.gru_64(T=400)
    prob = ps.RecurrenceProblem(m, h0, inputs=x)
    a = ps.solve(prob, ps.DEER(jacobian="diagonal"), freeze_converged=True)
    b = ps.solve(prob, ps.DEER(jacobian="diagonal"), freeze_converged=False)
    assert ps.is_successful(a) and ps.is_successful(b)
    np.testing.assert_allclose(a.states, b.states, atol=1e-8)


def test_invalid_algorithm_options():
    with pytest.raises(ValueError, match="jacobian"):
        ps.DEER(jacobian="exact")
    with pytest.raises(TypeError, match="damping"):
        ps.DEER(damping="linesearch")
    with pytest.raises(ValueError, match="shrink"):
        ps.LineSearch(shrink=1.5)
    with pytest.raises(ValueError, match="restart"):
        ps.NewtonKrylov(restart=0)
    with pytest.raises(ValueError, match="forcing"):
        ps.NewtonKrylov(forcing="fixed")


def test_converged_flags_are_per_batch_element():
    """A failed solve reports each batch element: one starting on the fixed point (exact at
    once) is converged, one far away is not."""
    model, h0, _ = problems.shplrnn_3x50(T=2000)
    fixed = model.sequential(h0, None, 2000)[-1]
    prob = ps.RecurrenceProblem(model, np.stack([fixed, h0 + 3.0]), T=300)
    sol = ps.solve(prob, ps.DEER(jacobian="none"), maxiter=2)
    assert sol.retcode is ps.ReturnCode.MaxIters
    assert sol.converged.tolist() == [True, False]
    ref = ps.solve(prob, ps.Sequential()).states
    np.testing.assert_allclose(sol.states[0], ref[0], atol=1e-8)


def test_vjp_refuses_a_failed_solution():
    m, h0, _ = problems.chaotic_clipped_3x50(T=500)
    sol = ps.solve(ps.RecurrenceProblem(m, h0, T=500), ps.DEER(), maxiter=5)
    assert not ps.is_successful(sol)
    with pytest.raises(ValueError, match="successful"):
        sol.vjp(np.ones_like(sol.states))


@pytest.mark.parametrize("alg", ALGORITHMS[:8], ids=repr)
@given(prob=contracting_problems(kinds=("shplrnn",)))  # (the others are driven by inputs)
def test_constant_guess_is_linearised_once_with_the_same_result(alg, prob):
    """The default guess repeats h0: without inputs, DEER linearises one step of it and
    broadcasts. The iterates are those of the same guess given explicitly (evaluated at
    every step): bit for bit on the Numba backend, whose model kernels compute every row
    alike; on the NumPy backend BLAS sums a 1-row and a T-row product in different orders,
    so there they agree to rounding and take the same iterations."""
    guess = np.broadcast_to(prob.h0[..., None, :], (*prob.batch_shape, prob.T, prob.D))
    calls, cls = [], type(prob.model)
    methods = {name: getattr(cls, name) for name in ("f", "f_and_jacobian",
                                                      "f_and_diagonal_jacobian")}

    def spy(method):
        return lambda m, h, x=None: calls.append(h.shape[-2]) or method(m, h, x)

    try:
        for name, method in methods.items():
            setattr(cls, name, spy(method))
        fast = ps.solve(prob, alg, maxiter=60)
        first = calls[0]
        slow = ps.solve(prob, alg, maxiter=60, h_init=guess.copy())
    finally:
        for name, method in methods.items():
            setattr(cls, name, method)
    assert fast.retcode == slow.retcode and fast.stats.iterations == slow.stats.iterations
    assert first == 1  # one step linearised, not T
    if fast.backend.compiled:
        np.testing.assert_array_equal(fast.states, slow.states)
        assert fast.stats.residual_history == slow.stats.residual_history
    else:
        np.testing.assert_allclose(fast.states, slow.states, rtol=1e-13, atol=1e-15)
