"""A successful DEER solve keeps the Jacobians it evaluated at its solution (``sol.jacobians``),
steps frozen early included, and ``sol.vjp`` reuses them: the same cotangents as evaluating
them again. Cotangents are computed when first read."""

from __future__ import annotations

import numpy as np
import pytest

import pitsolve as ps
from pitsolve.testing import problems


def _prev(prob, states):
    return np.concatenate([np.broadcast_to(prob.h0, states[..., :1, :].shape), states[..., :-1, :]],
                          axis=-2)


@pytest.mark.parametrize("name", ["shplrnn_3x50", "gru_64"])
def test_deer_keeps_the_jacobians_at_its_solution(name):
    prob = getattr(problems, name)(T=600).problem()
    state = ps.init(prob, ps.DEER())
    while not state.done:
        ps.step(state)
    assert len(state.kept) > 1  # steps frozen before the end were kept as they converged
    sol = ps.finalize(state)
    assert ps.is_successful(sol)
    model = prob.working_model()
    J = model.jacobian(_prev(prob, sol.states), prob.inputs)
    # equal up to the rounding of BLAS products over segments of different lengths
    np.testing.assert_allclose(sol.jacobians, J, rtol=1e-12, atol=1e-15)


def test_batched_solve_keeps_jacobians_and_vjp_reuses_them(monkeypatch):
    model = ps.models.ShPLRNN(3, 16, seed=2)
    h0 = np.random.default_rng(0).normal(size=(2, 3))
    prob = ps.RecurrenceProblem(model, h0, T=300)
    sol = ps.solve(prob, ps.DEER(), rtol=1e-12, atol=1e-14)
    assert sol.jacobians.shape == (2, 300, 3, 3)
    g = np.random.default_rng(1).normal(size=sol.states.shape)
    calls = []
    cls = type(model)
    fj = cls.f_and_jacobian
    monkeypatch.setattr(cls, "f_and_jacobian", lambda *a: calls.append(1) or fj(*a))
    reused = sol.vjp(g)
    assert reused.params is not None and not calls  # no Jacobian evaluated again
    sol.jacobians = None
    fresh = sol.vjp(g)
    assert calls
    for k in model.params:
        np.testing.assert_array_equal(reused.params[k], fresh.params[k])
    np.testing.assert_array_equal(reused.h0, fresh.h0)


def test_only_exact_jacobians_are_kept():
    prob = problems.shplrnn_3x50(T=200).problem()
    assert ps.solve(prob, ps.DEER(jacobian="diagonal")).jacobians is None
    assert ps.solve(prob, ps.DEER(jacobian="none"), maxiter=300).jacobians is None
    assert ps.solve(prob, ps.Sequential()).jacobians is None
    failed = ps.solve(problems.chaotic_clipped_3x50(T=2000).problem(), ps.DEER(), maxiter=5)
    assert not ps.is_successful(failed) and failed.jacobians is None
    ssm = ps.models.LinearSSM(3, 2, readout_hidden=4, seed=1)  # diagonal Jacobians: exact
    x = np.random.default_rng(0).normal(size=(50, 2))
    sol = ps.solve(ps.RecurrenceProblem(ssm, np.zeros(3), inputs=x), ps.DEER(jacobian="diagonal"))
    assert sol.jacobians is not None and sol.jacobians.shape == (50, 3)


def test_cotangents_are_computed_when_first_read(monkeypatch):
    model = ps.models.Elman(4, 2, seed=1)
    x = np.random.default_rng(0).normal(size=(40, 2))
    sol = ps.solve(ps.RecurrenceProblem(model, np.zeros(4), inputs=x), ps.DEER())
    calls = []
    vi = type(model).vjp_inputs
    monkeypatch.setattr(type(model), "vjp_inputs", lambda *a: calls.append(1) or vi(*a))
    cot = sol.vjp(np.ones(sol.states.shape))
    _ = cot.params, cot.h0
    assert not calls
    assert cot.inputs.shape == x.shape and len(calls) == 1
    _ = cot.inputs
    assert len(calls) == 1  # kept
    with pytest.raises(AttributeError):
        _ = cot.nothing
