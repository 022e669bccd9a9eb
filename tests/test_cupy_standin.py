"""CuPy in, CuPy out, checked without a GPU: every algorithm × built-in model × gradient route,
and training, run on a strict NumPy-backed stand-in for CuPy (``pitsolve.testing.fake_cupy``:
its arrays refuse implicit conversion to NumPy and mixing with NumPy arrays) and give the
NumPy backend's numbers; and the four CuPy bugs of issue 13 stay fixed."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import pitsolve as ps
from pitsolve.testing import fake_cupy

from .test_backends import ALGORITHMS, PROBLEMS


@pytest.fixture
def cp():
    with fake_cupy.installed() as module:
        yield module


def _device(cp, prob):
    def dev(x):
        return None if x is None else cp.asarray(x)

    return ps.RecurrenceProblem(prob.model, dev(prob.h0), inputs=dev(prob.inputs), T=prob.T)


def test_the_stand_in_is_strict(cp):
    """What the tests below rely on: a host array never meets a device array silently."""
    a = cp.asarray(np.ones(3))
    assert type(a).__module__ == "cupy" and ps.backends.is_cupy_array(a)
    for mix in (lambda: a + np.ones(3), lambda: np.ones(3) * a, lambda: cp.matmul(a, np.ones(3)),
                lambda: np.asarray(a), lambda: a.__setitem__(slice(None), np.zeros(3))):
        with pytest.raises(TypeError, match="fake cupy"):
            mix()
    assert type(a.sum()).__module__ == "cupy"  # reductions stay on the device (0-d arrays)
    assert float(a.sum()) == 3.0 and isinstance(a.get(), np.ndarray)


@pytest.mark.parametrize("alg", ALGORITHMS, ids=repr)
@pytest.mark.parametrize("name", PROBLEMS)
def test_every_algorithm_and_gradient_route_runs_on_cupy_arrays(cp, name, alg):
    prob = PROBLEMS[name]
    ref = ps.solve(prob, alg, backend="numpy", rtol=1e-10, atol=1e-12)
    sol = ps.solve(_device(cp, prob), alg, rtol=1e-10, atol=1e-12)
    assert ps.is_successful(sol) and sol.backend.name == "cupy"
    assert type(sol.states).__module__ == "cupy"
    np.testing.assert_allclose(sol.states.get(), ref.states, rtol=1e-12, atol=1e-14)
    g = np.random.default_rng(1).normal(size=ref.states.shape)
    cot, ref_cot = sol.vjp(cp.asarray(g)), ref.vjp(g)
    for got, want in [(cot.params.flatten(), ref_cot.params.flatten()), (cot.h0, ref_cot.h0),
                      (cot.inputs, ref_cot.inputs)]:
        if want is None:
            assert got is None
            continue
        assert type(got).__module__ == "cupy"
        np.testing.assert_allclose(got.get(), want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("solver", [ps.Sequential(), ps.DEER(), ps.DEER(jacobian="diagonal"),
                                    ps.NewtonKrylov()], ids=repr)
@pytest.mark.parametrize("model", [
    ps.models.ShPLRNN(3, 8, seed=1), ps.models.ALRNN(3, 2, seed=1), ps.models.GRU(3, seed=1),
    ps.models.ObservedModel(ps.models.ShPLRNN(4, 8, seed=2), ps.models.Affine.init(3, 4, seed=3)),
], ids=lambda m: type(m).__name__)
def test_loss_and_grad_on_cupy_data(cp, model, solver):
    data = ps.dsr.lorenz63(T=120, dt=0.01, seed=1)
    forcing = ps.GTF(alpha="adaptive")
    loss, grads = ps.loss_and_grad(model, cp.asarray(data), forcing=forcing, solver=solver)
    ref_loss, ref_grads = ps.loss_and_grad(model, data, forcing=forcing, solver=solver,
                                           backend="numpy")
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    assert all(type(v).__module__ == "cupy" for v in grads.values())
    np.testing.assert_allclose(grads.flatten().get(), ref_grads.flatten(), rtol=1e-9,
                               atol=1e-12)


@pytest.mark.parametrize("objective", ["global", "local"])
def test_fit_and_resume_on_cupy_data(cp, tmp_path, objective):
    data = cp.asarray(ps.dsr.lorenz63(T=120, dt=0.01, seed=1))
    opts = dict(epochs=3, steps_per_epoch=2, checkpoint=tmp_path / "c.npz",
                validate=lambda m: float(m.params["a"].sum()))
    if objective == "local":
        opts |= dict(objective="local", seq_len=None,
                     solver=ps.Schwarz(windows=3, overlap=8, inner=ps.DEER()))
    else:
        opts |= dict(seq_len=40, batch_size=2)
    full = ps.fit(ps.models.ShPLRNN(3, 8, seed=1), data, **opts)
    part = ps.fit(ps.models.ShPLRNN(3, 8, seed=1), data, **opts | dict(
        checkpoint=tmp_path / "p.npz", callbacks=[lambda info: info["epoch"] == 2]))
    resumed = ps.fit(ps.models.ShPLRNN(3, 8, seed=1), data, **opts | dict(
        checkpoint=tmp_path / "p.npz", resume=True))
    assert part.epochs == 2 and resumed.loss_history == full.loss_history
    for model in (resumed.model, resumed.best_model):
        assert all(type(v).__module__ == "cupy" for v in model.params.values())
    np.testing.assert_array_equal(resumed.model.params.flatten().get(),
                                  full.model.params.flatten().get())


# -- the four bugs of issue 13 --------------------------------------------------------------------
def test_vjp_after_sequential_on_cupy_arrays(cp):
    """(1) ``sol.vjp`` after ``Sequential`` failed with "kernel 'numba' runs on NumPy arrays
    only": the solution now carries its backend and adjoint rule."""
    model, h0 = ps.models.Elman(4, 0, seed=1), np.ones(4)
    sol = ps.solve(ps.RecurrenceProblem(model, cp.asarray(h0), T=30), ps.Sequential())
    assert sol.backend.name == "cupy" and isinstance(sol.adjoint, ps.adjoint.ScanAdjoint)
    cot = sol.vjp(cp.ones(sol.states.shape))
    ref = ps.solve(ps.RecurrenceProblem(model, h0, T=30), ps.Sequential()).vjp(np.ones((30, 4)))
    np.testing.assert_allclose(cot.params.flatten().get(), ref.params.flatten(), rtol=1e-10)


def test_newton_krylov_gives_the_same_krylov_iterations_on_cupy(cp):
    """(2) CuPy's gmres reads ``maxiter`` as inner iterations, SciPy's as restart cycles:
    pitsolve runs its own GMRES on every backend, so the limits and the iterations agree (and
    no CuPy solver is imported)."""
    prob = PROBLEMS["gru"]
    alg = ps.NewtonKrylov(restart=5, max_krylov=40)
    ref = ps.solve(prob, alg, backend="numpy")
    sol = ps.solve(_device(cp, prob), alg)
    assert sol.stats.krylov_iterations == ref.stats.krylov_iterations > 0
    assert sol.stats.iterations == ref.stats.iterations
    assert "cupyx" not in sys.modules


def test_the_gpu_extras_ask_for_a_cupy_with_the_gmres_pitsolve_expects():
    """(3) The ``gpu`` extra allowed CuPy 13 (whose solvers take ``tol=``): both GPU extras
    ask for CuPy 14 and numba-cuda."""
    tomllib = pytest.importorskip("tomllib")  # (Python ≥ 3.11)
    root = Path(__file__).resolve().parent.parent
    extras = tomllib.loads((root / "pyproject.toml").read_text())["project"][
        "optional-dependencies"]
    for extra, cupy in (("gpu", "cupy-cuda12x>=14"), ("gpu-cuda13", "cupy-cuda13x>=14")):
        assert cupy in extras[extra] and any(r.startswith("numba-cuda") for r in extras[extra])


def test_shplrnn_parameters_follow_the_data_to_the_device(cp):
    """(4) ``ShPLRNN`` on CuPy arrays raised "mixed with cupy arrays in cupy.matmul" unless the
    user moved its parameters: a solve moves them (``model.on``), and ``model.to(cupy)`` does
    it explicitly."""
    model, h0, _ = ps.testing.problems.shplrnn_3x50(T=10)
    sol = ps.solve(ps.RecurrenceProblem(model, cp.asarray(h0), T=50), ps.DEER())
    assert ps.is_successful(sol)
    moved = model.to(cp)
    assert all(type(v).__module__ == "cupy" for v in moved.params.values())
    assert moved.to(cp) is moved and model.to(np) is model  # nothing to move: the same model
    f = moved.f(cp.asarray(h0))
    np.testing.assert_allclose(f.get(), model.f(h0), rtol=1e-14)
    with pytest.raises(TypeError, match="fake cupy"):
        model.on("numpy").f(cp.asarray(h0))  # host parameters, device state: refused


def test_use_local_device_needs_a_device():
    from types import SimpleNamespace

    cupy = SimpleNamespace(cuda=SimpleNamespace(runtime=SimpleNamespace(getDeviceCount=lambda: 0)))
    with pytest.raises(RuntimeError, match="no CUDA device"):
        ps.parallel.use_local_device(cupy=cupy)
