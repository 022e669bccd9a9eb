"""The common interface: problems validate input, solve dispatches, solutions report."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from hypothesis import given

import pitsolve as ps

from . import naive
from .strategies import affine_maps, scan_cases

RNG = np.random.default_rng(0)


def linear(batch=(2,), T=5, D=3, dense=False, dtype=np.float64):
    return affine_maps(np.random.default_rng(0), batch, T, D, dense=dense, radius=0.9, dtype=dtype)


# -- solve on linear problems ---------------------------------------------------------------
ALGORITHMS = [
    ps.Sequential(),
    ps.Sequential(backend="numpy"),
    ps.ParallelScan(),
    ps.ParallelScan(chunk_size=3),
    ps.ParallelScan(backend="numpy"),
    ps.ParallelScan(method="logdepth"),
]


@pytest.mark.parametrize("alg", ALGORITHMS, ids=repr)
@given(case=scan_cases(max_T=40))
def test_solve_linear_equals_loop(alg, case):
    A, b, h0 = case
    sol = ps.solve(ps.LinearRecurrenceProblem(A, b, h0), alg)
    assert ps.is_successful(sol)
    assert sol.states.dtype == b.dtype and sol.states.shape == b.shape
    ref = naive.scan_forward(*(x.astype(np.float64) for x in (A, b, h0)))
    tol = 1e-10 if b.dtype == np.float64 else 1e-4
    np.testing.assert_allclose(sol.states, ref, rtol=tol, atol=tol * (1 + np.abs(ref).max()))
    assert sol.stats.scans == 1 and sol.stats.wall_time > 0
    assert sol.problem is not None and sol.algorithm is alg


@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("alg", [ps.Sequential(), ps.ParallelScan(chunk_size=2)], ids=repr)
def test_linear_vjp_matches_finite_differences(dense, alg):
    """sol.vjp(g) gives dL/dA, dL/db, dL/dh0 of L = ⟨g, h⟩ (central differences, float64)."""
    A, b, h0 = linear(batch=(2,), T=6, D=3, dense=dense)
    g = RNG.normal(size=b.shape)
    cot = ps.solve(ps.LinearRecurrenceProblem(A, b, h0), alg).vjp(g)

    def loss(A_, b_, h0_):
        return np.sum(g * ps.solve(ps.LinearRecurrenceProblem(A_, b_, h0_), alg).states)

    args = [A, b, h0]
    for i, bar in enumerate([cot.A, cot.b, cot.h0]):
        d = RNG.normal(size=args[i].shape)
        eps = np.sqrt(np.finfo(float).eps) * max(1.0, np.abs(args[i]).max())
        plus = [a + eps * d if j == i else a for j, a in enumerate(args)]
        minus = [a - eps * d if j == i else a for j, a in enumerate(args)]
        fd = (loss(*plus) - loss(*minus)) / (2 * eps)
        assert np.isclose(np.sum(bar * d), fd, rtol=1e-6, atol=1e-8), (i, np.sum(bar * d), fd)


def test_overflow_is_a_return_code_and_throw_raises():
    A = np.full((1, 200, 1), 1e3)
    b = np.ones((1, 200, 1))
    prob = ps.LinearRecurrenceProblem(A, b, np.ones((1, 1)))
    with np.errstate(over="ignore", invalid="ignore"):
        sol = ps.solve(prob, ps.ParallelScan())
        assert sol.retcode is ps.ReturnCode.NonFinite and not ps.is_successful(sol)
        assert "non-finite" in str(sol.retcode)
        with pytest.raises(ps.SolverError) as info:
            ps.solve(prob, ps.ParallelScan(), throw=True)
    assert info.value.solution.retcode is ps.ReturnCode.NonFinite


def test_init_step_finalize():
    A, b, h0 = linear()
    prob = ps.LinearRecurrenceProblem(A, b, h0)
    state = ps.init(prob, ps.ParallelScan())
    assert not state.done
    ps.step(state)
    assert state.done
    sol = ps.finalize(state)
    np.testing.assert_allclose(sol.states, ps.solve(prob, ps.Sequential()).states, atol=1e-12)


def test_return_codes_carry_messages():
    for code in ps.ReturnCode:
        assert len(str(code)) > 30 and code.name in str(code)
    assert ps.is_successful(ps.ReturnCode.Success)
    assert not ps.is_successful(ps.ReturnCode.MaxIters)
    with pytest.raises(TypeError):
        ps.is_successful("Success")


def test_algorithms_are_frozen_keyword_only():
    alg = ps.ParallelScan(chunk_size=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        alg.chunk_size = 8
    with pytest.raises(TypeError):
        ps.ParallelScan("numba")  # positional options are refused


# -- invalid input: every error names the argument --------------------------------------------
def test_linear_problem_validation():
    A, b, h0 = linear(batch=(2,), T=5, D=3)
    bad = {
        "A": [(A[..., :2], ValueError), (A.astype(np.int64), TypeError),
              (A.astype(np.complex128), TypeError)],
        "b": [(b[:, :0], ValueError), (b[0, 0], ValueError), (b.astype(np.int32), TypeError)],
        "h0": [(h0[:1], ValueError), (h0[:, :2], ValueError), (None, TypeError)],
    }
    for name, cases in bad.items():
        for value, err in cases:
            args = {"A": A, "b": b, "h0": h0, name: value}
            with pytest.raises(err, match=name):
                ps.LinearRecurrenceProblem(**args)


@pytest.mark.parametrize("name", ["A", "b", "h0"])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_is_rejected(name, bad):
    args = dict(zip(["A", "b", "h0"], linear(), strict=True))
    args[name] = args[name].copy()
    args[name].flat[3] = bad
    with pytest.raises(ValueError, match=f"{name} contains non-finite"):
        ps.LinearRecurrenceProblem(**args)


def test_mismatched_batch_axes_and_mixed_precision():
    A, b, h0 = linear(batch=(2,))
    with pytest.raises(ValueError, match="A must have shape"):
        ps.LinearRecurrenceProblem(A[:1], b, h0)
    prob = ps.LinearRecurrenceProblem(A.astype(np.float32), b, h0)
    assert prob.dtype == np.float64  # mixed precision is promoted, never truncated
    prob32 = ps.LinearRecurrenceProblem(*(x.astype(np.float32) for x in (A, b, h0)))
    assert ps.solve(prob32, ps.ParallelScan()).states.dtype == np.float32


def test_solve_rejects_bad_controls_and_algorithms():
    prob = ps.LinearRecurrenceProblem(*linear())
    with pytest.raises(TypeError, match="valid controls are"):
        ps.solve(prob, ps.ParallelScan(), tolerance=1e-3)
    with pytest.raises(ValueError, match="rtol"):
        ps.solve(prob, ps.ParallelScan(), rtol=-1.0)
    with pytest.raises(TypeError, match="maxiter"):
        ps.solve(prob, ps.ParallelScan(), maxiter=2.5)
    with pytest.raises(ValueError, match="maxiter"):
        ps.solve(prob, ps.ParallelScan(), maxiter=0)
    with pytest.raises(ValueError, match="fallback"):
        ps.solve(prob, ps.ParallelScan(), fallback="magic")
    with pytest.raises(ValueError, match="backend"):
        ps.solve(prob, ps.ParallelScan(), backend="fortran")
    with pytest.raises(TypeError, match="algorithm must be"):
        ps.solve(prob, "deer")
    with pytest.raises(ValueError, match="chunk_size"):
        ps.ParallelScan(chunk_size=0)
    with pytest.raises(ValueError, match="method"):
        ps.ParallelScan(method="magic")
    with pytest.raises(ValueError, match="backend"):
        ps.Sequential(backend="gpu")
    with pytest.raises(ValueError, match="cupy"):
        ps.solve(prob, ps.ParallelScan(backend="cupy"))


def test_unsupported_pair_is_a_clear_error():
    class Model:
        state_dim = 2

        def f(self, h, x=None):
            return h

    prob = ps.RecurrenceProblem(Model(), np.zeros(2), T=3)
    with pytest.raises(TypeError, match="cannot solve a RecurrenceProblem"):
        ps.solve(prob, ps.ParallelScan())


def test_recurrence_problem_validation():
    class Model:
        state_dim = 2
        input_dim = 1

        def f(self, h, x=None):
            return h

    m = Model()
    x = np.zeros((3, 7, 1))
    prob = ps.RecurrenceProblem(m, np.zeros((3, 2)), inputs=x)
    assert prob.T == 7 and prob.batch_shape == (3,) and prob.D == 2
    with pytest.raises(TypeError, match="model"):
        ps.RecurrenceProblem(object(), np.zeros(2), T=3)
    with pytest.raises(ValueError, match="state_dim"):
        ps.RecurrenceProblem(m, np.zeros(3), inputs=np.zeros((4, 1)))
    with pytest.raises(ValueError, match=r"T is required|inputs"):
        ps.RecurrenceProblem(m, np.zeros(2))
    with pytest.raises(ValueError, match="T=5 does not match"):
        ps.RecurrenceProblem(m, np.zeros((3, 2)), inputs=x, T=5)
    with pytest.raises(ValueError, match="batch axes"):
        ps.RecurrenceProblem(m, np.zeros((2, 2)), inputs=x)
    with pytest.raises(ValueError, match="T ≥ 1"):
        ps.RecurrenceProblem(m, np.zeros((3, 2)), inputs=x[:, :0])
    with pytest.raises(ValueError, match="T must be a positive"):
        ps.RecurrenceProblem(m, np.zeros((3, 2)), inputs=x, T=0)
    with pytest.raises(TypeError, match="T must be"):
        ps.RecurrenceProblem(m, np.zeros((3, 2)), inputs=x, T=7.0)
    with pytest.raises(ValueError, match="inputs contains non-finite"):
        ps.RecurrenceProblem(m, np.zeros((3, 2)), inputs=np.full((3, 7, 1), np.nan))
    with pytest.raises(TypeError, match="h0 must have dtype"):
        ps.RecurrenceProblem(m, np.zeros((3, 2), dtype=int), inputs=x)
    with pytest.raises(ValueError, match="input_dim"):
        ps.RecurrenceProblem(m, np.zeros((3, 2)), inputs=np.zeros((3, 7, 2)))


def test_tune_allocator_sets_glibc_thresholds_or_reports_it_cannot():
    import subprocess
    import sys

    code = (
        "import resource, numpy as np, pitsolve as ps\n"
        "print(ps.tune_allocator(2**28))\n"
        "def churn():\n"  # five 7.2 MB arrays alive, then freed: untuned glibc trims them
        "    arrays = [np.ones((100_000, 9)) for _ in range(5)]\n"
        "    del arrays\n"
        "churn(); churn()\n"
        "r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(20): churn()\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    tuned, faults = out.stdout.split()
    if tuned == "True":  # glibc: freed blocks are reused, not faulted in again (untuned:
        assert int(faults) < 100  # ~38 000 faults on the benchmark machine)
    with pytest.raises(ValueError, match="keep_bytes"):
        ps.tune_allocator(-1)


# -- stopping from the callback -------------------------------------------------------------------
@pytest.mark.parametrize("alg", [ps.DEER(), ps.DEER(jacobian="diagonal"), ps.NewtonKrylov(),
                                 ps.Schwarz(windows=4, overlap=16, inner=ps.DEER())], ids=repr)
def test_a_callback_stops_the_solve_with_the_best_iterate(alg):
    """Returning True from the callback ends the solve with ``Terminated`` and the best
    iterate so far (not ``states=None`` and a message about a missing stats entry)."""
    from pitsolve.testing import problems

    model, h0, _ = problems.shplrnn_3x50(T=10)
    prob = ps.RecurrenceProblem(model, h0, T=400)
    seen = []
    sol = ps.solve(prob, alg, callback=lambda state: seen.append(1) or len(seen) == 1,
                   fallback="sequential")  # (a stop is the caller's choice: no fallback)
    assert sol.retcode is ps.ReturnCode.Terminated and len(seen) == 1
    assert "stopped by the callback" in str(sol.retcode)
    assert sol.states is not None and sol.states.shape == (400, 3)
    assert np.isfinite(sol.states).all() and "fallback" not in sol.stats.extra
    with pytest.raises(ValueError, match="successful"):
        sol.vjp(np.ones_like(sol.states))
    with pytest.raises(ps.SolverError, match="Terminated"):
        ps.solve(prob, alg, callback=lambda state: True, throw=True)


def test_the_failure_code_names_no_missing_entry():
    assert "stats" not in ps.ReturnCode.Failure.message


@pytest.mark.parametrize("model", [ps.models.ShPLRNN(3, 4), ps.models.Elman(3, 1),
                                   ps.models.ObservedModel(ps.models.ShPLRNN(3, 4),
                                                           ps.models.Affine.init(2, 3))],
                         ids=lambda m: type(m).__name__)
def test_replacing_an_unknown_parameter_is_a_type_error_naming_the_valid_ones(model):
    with pytest.raises(TypeError, match=r"unknown parameter.*W9.*the parameters are \["):
        model.replace(W9=np.zeros(3))
    with pytest.raises(TypeError, match="W9"):
        model.params.replace(W9=np.zeros(3))


def test_a_problem_without_comm_holds_all_rows():
    rng = np.random.default_rng(0)
    prob = ps.LinearRecurrenceProblem(rng.normal(size=(7, 2)), rng.normal(size=(7, 2)),
                                      np.zeros(2))
    assert prob.comm is None and prob.rows == (0, 7)
    assert ps.solve(prob, ps.ParallelScan()).rows == (0, 7)
    model = ps.models.Elman(2, seed=0)
    assert ps.solve(ps.RecurrenceProblem(model, np.zeros(2), T=5), ps.DEER()).rows == (0, 5)
