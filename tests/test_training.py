"""Forced losses and gradients, aGTF, fit, checkpoints and exact resume."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pitsolve as ps
from pitsolve.models import ForcedModel
from pitsolve.training.forcing import estimate_alpha, forcing_signal
from pitsolve.training.losses import forced_problem

SOLVERS = [ps.Sequential(), ps.DEER(), ps.DEER(jacobian="diagonal"), ps.NewtonKrylov(),
           ps.Sequential(backend="numpy")]
TIGHT = {"rtol": 1e-12, "atol": 1e-14, "maxiter": 200}


def lorenz_data(T=400, seed=0):
    """A z-scored Lorenz-63 trajectory (RK4, dt = 0.01) from a random point on the attractor."""
    step = ps.models.ODEStep(ps.models.Lorenz63(), dt=0.01)
    h0 = np.random.default_rng(seed).normal(size=3) + np.array([0, 0, 25.0])
    x = step.sequential(h0, None, T + 500)[500:]
    return (x - x.mean(0)) / x.std(0)


def models():
    return [
        ps.models.ShPLRNN(3, 8, seed=1),
        ps.models.ClippedShPLRNN(3, 8, seed=2),
        ps.models.ALRNN(3, 2, seed=3),
        ps.models.Elman(3, seed=4),
        ps.models.GRU(3, seed=5),
    ]


def fd_directional(model, data, forcing, d, eps=1e-6):
    def f(m):
        return ps.loss_and_grad(m, data, forcing=forcing, solver=ps.Sequential())[0]

    plus = model.replace(**{k: v + eps * d[k] for k, v in model.params.items()})
    minus = model.replace(**{k: v - eps * d[k] for k, v in model.params.items()})
    return (f(plus) - f(minus)) / (2 * eps)


@pytest.mark.parametrize("model", models(), ids=lambda m: type(m).__name__)
@pytest.mark.parametrize("forcing", [ps.GTF(alpha=0.3), ps.STF(interval=4),
                                     ps.GTF(alpha=0.5, partial=False)], ids=repr)
def test_gradient_matches_finite_differences_and_bptt(model, forcing):
    """Every solver's gradient equals central differences and the BPTT gradient."""
    rng = np.random.default_rng(0)
    data = 0.5 * rng.normal(size=(2, 30, 2))
    d = {k: rng.normal(size=v.shape) for k, v in model.params.items()}
    fd = fd_directional(model, data, forcing, d)
    ref_loss, ref = ps.loss_and_grad(model, data, forcing=forcing, solver=ps.Sequential())
    for solver in SOLVERS:
        loss, g = ps.loss_and_grad(model, data, forcing=forcing, solver=solver, **TIGHT)
        assert list(g) == list(model.params)
        assert np.isclose(loss, ref_loss, rtol=1e-10)
        an = sum(float((g[k] * d[k]).sum()) for k in d)
        assert np.isclose(an, fd, rtol=1e-6, atol=1e-9), (solver, an, fd)
        for k in g:
            np.testing.assert_allclose(g[k], ref[k], rtol=1e-6, atol=1e-10)


def test_alpha_zero_is_free_running_and_alpha_one_is_teacher_forcing():
    model = ps.models.ShPLRNN(3, 8, seed=1)
    data = np.random.default_rng(0).normal(size=(40, 2))
    free = forced_problem(model, data, ps.GTF(alpha=0.0), 0.0)
    sol = ps.solve(free, ps.Sequential())
    zhat0 = forcing_signal(data, 3)[0]
    ref = model.sequential(zhat0, None, 39)
    np.testing.assert_allclose(sol.states, ref, atol=1e-12)
    forced = ps.solve(forced_problem(model, data, ps.GTF(alpha=1.0), 1.0), ps.Sequential())
    np.testing.assert_allclose(forced.states[:, :2], data[1:], atol=1e-14)  # observed units = data
    # unobserved unit runs freely from the forced states: z̃_t[2] = F(z̃_{t-1})[2]
    prev = np.concatenate([zhat0[None], forced.states[:-1]])
    np.testing.assert_allclose(forced.states[:, 2], model.f(prev)[:, 2], atol=1e-14)


def test_forced_model_derivatives():
    from pitsolve.testing import check_derivatives

    for base in models():
        fm = ForcedModel(base)
        check_derivatives(fm, seed=1)


def test_agtf_estimators_on_hand_computed_jacobians():
    """A diagonal linear-ish model: J = diag(a) exactly, so every estimator is max|a|."""
    p = {"a": np.array([1.5, 0.5, 0.2]), "W1": np.zeros((3, 4)), "W2": np.zeros((4, 3)),
         "h1": np.zeros(3), "h2": np.zeros(4)}
    model = ps.models.ShPLRNN.from_params(p)
    zhat = np.random.default_rng(0).normal(size=(2, 10, 3))
    for est in ["product", "mean", "max", "shplrnn-bound"]:
        gtf = ps.GTF(alpha="adaptive", estimator=est)
        alpha = estimate_alpha(model, zhat, gtf, alpha=0.0)
        assert np.isclose(alpha, 1 - 1 / 1.5), est
        # α above α̂ decays towards it with γ = 0.999
        assert np.isclose(estimate_alpha(model, zhat, gtf, alpha=0.9),
                          0.999 * 0.9 + 0.001 * (1 - 1 / 1.5))
    # product (geometric mean over t) differs from max when ‖J_t‖ varies over t
    W2 = np.array([[1.0, 0, 0]])
    q = {"a": np.zeros(3), "W1": np.array([[2.0], [0], [0]]), "W2": W2, "h1": np.zeros(3),
         "h2": np.zeros(1)}
    m2 = ps.models.ShPLRNN.from_params(q)
    z = np.zeros((1, 4, 3))
    z[0, :2, 0] = 1.0  # J = [[2,0,0],...] on two steps, 0 on the other two
    geo = np.exp(np.mean(np.log([2.0, 2.0, 1e-300, 1e-300])))
    assert np.isclose(estimate_alpha(m2, z, ps.GTF(alpha="adaptive", estimator="max"), 0.0), 0.5)
    assert estimate_alpha(m2, z, ps.GTF(alpha="adaptive", estimator="product"), 0.0) == max(
        0.0, 1 - 1 / geo)
    assert np.isclose(estimate_alpha(m2, z, ps.GTF(alpha="adaptive", estimator="mean"), 0.0), 0.0)


def test_gtf_deer_converges_where_unforced_deer_fails():
    """On the chaotic clipped shPLRNN, GTF with α ≥ α* makes DEER converge in a few
    iterations; without forcing DEER fails."""
    from pitsolve.testing import problems

    model, h0, _ = problems.chaotic_clipped_3x50(T=3000)
    traj = model.sequential(h0, None, 3000)
    unforced = ps.solve(ps.RecurrenceProblem(model, h0, T=3000), ps.DEER(), maxiter=50)
    assert not ps.is_successful(unforced)
    zhat = forcing_signal(traj, 3)
    gtf = ps.GTF(alpha="adaptive", partial=False)
    alpha = estimate_alpha(model, zhat, gtf, 0.0)
    forced = forced_problem(model, traj, ps.GTF(alpha=alpha, partial=False), alpha)
    sol = ps.solve(forced, ps.DEER(), maxiter=50)
    assert ps.is_successful(sol) and sol.stats.iterations <= 12, sol.stats.iterations
    ref = ps.solve(forced, ps.Sequential()).states
    np.testing.assert_allclose(sol.states, ref, atol=1e-7)


def test_short_fit_on_lorenz_lowers_the_loss():
    data = lorenz_data(T=2000)
    model = ps.models.ShPLRNN(3, 20, seed=0)
    res = ps.fit(model, data, forcing=ps.GTF(alpha=0.2), epochs=6, seq_len=50, batch_size=8,
                 optimizer=ps.optim.Adam(lr=3e-3), seed=0)
    assert res.stopped is None and res.epochs == 6
    assert res.loss_history[-1] < 0.5 * res.loss_history[0], res.loss_history


@pytest.mark.parametrize("solver", [ps.DEER(), ps.Sequential()], ids=repr)
def test_resume_gives_the_uninterrupted_result(tmp_path, solver):
    data = lorenz_data(T=600)
    kw = dict(forcing=ps.GTF(alpha="adaptive"), solver=solver, seq_len=40, batch_size=4,
              optimizer=ps.optim.RAdam(lr=2e-3), seed=3)
    model = ps.models.ShPLRNN(3, 10, seed=0)
    full = ps.fit(model, data, epochs=5, **kw)
    part = ps.fit(model, data, epochs=2, checkpoint=tmp_path / "c.npz", **kw)
    assert part.epochs == 2
    resumed = ps.fit(model, data, epochs=5, checkpoint=tmp_path / "c.npz", resume=True, **kw)
    assert resumed.epochs == 5
    for k in model.params:
        np.testing.assert_array_equal(resumed.model.params[k], full.model.params[k])
    assert resumed.loss_history == full.loss_history
    assert resumed.alpha_history == full.alpha_history


def test_nan_parameters_stop_training_and_keep_the_last_good_state(tmp_path):
    data = lorenz_data(T=300)

    class Exploding(ps.optim.Adam):
        def update(self, params, grads, state):
            new, st = super().update(params, grads, state)
            if state.step >= 5:
                new = new.replace(a=np.full(3, np.nan))
            return new, st

    model = ps.models.ShPLRNN(3, 6, seed=0)
    res = ps.fit(model, data, forcing=ps.GTF(alpha=0.3), epochs=10, steps_per_epoch=2,
                 seq_len=30, batch_size=2, optimizer=Exploding(lr=1e-3),
                 checkpoint=tmp_path / "c.npz")
    assert res.stopped is not None and "non-finite" in res.stopped
    assert res.epochs == 2
    assert all(np.isfinite(v).all() for v in res.model.params.values())
    arrays, meta = ps.training.load_checkpoint(tmp_path / "c.npz")
    assert meta["epoch"] == 2 and np.isfinite(arrays["params/a"]).all()


@settings(max_examples=10)
@given(bad=st.sampled_from(["nan", "rank", "N>M", "short", "seq_len"]))
def test_bad_data_is_rejected_before_any_work(bad):
    model = ps.models.ShPLRNN(3, 6, seed=0)
    data = np.zeros((100, 2))
    kw = {}
    if bad == "nan":
        data[5, 1] = np.nan
    elif bad == "rank":
        data = np.zeros(100)
    elif bad == "N>M":
        data = np.zeros((100, 4))
    elif bad == "short":
        data = np.zeros((1, 2))
    else:
        kw = {"seq_len": 500}
    with pytest.raises(ValueError):
        ps.fit(model, data, epochs=1, **kw)


def test_validation_keeps_the_best_model_across_resume(tmp_path):
    """Model selection: the lowest validation score's parameters are returned (NaN never wins),
    and the choice survives a checkpoint/resume."""
    data = lorenz_data(T=300)
    scores = iter([3.0, 1.0, float("nan"), 2.0, 5.0] * 2)
    seen = []

    def validate(model):
        seen.append(model.params["a"].copy())
        return next(scores)

    kw = dict(forcing=ps.GTF(alpha=0.3), seq_len=30, batch_size=2, steps_per_epoch=2,
              optimizer=ps.optim.Adam(lr=1e-2), validate=validate)
    model = ps.models.ShPLRNN(3, 6, seed=0)
    res = ps.fit(model, data, epochs=5, **kw)
    assert res.best_epoch == 2 and res.best_score == 1.0
    np.testing.assert_array_equal(res.best_model.params["a"], seen[1])
    assert [e for e, _ in res.validation_history] == [1, 2, 3, 4, 5]
    scores = iter([3.0, 1.0, float("nan"), 2.0, 5.0])
    ps.fit(model, data, epochs=3, checkpoint=tmp_path / "c.npz", **kw)
    resumed = ps.fit(model, data, epochs=5, checkpoint=tmp_path / "c.npz", resume=True, **kw)
    assert resumed.best_epoch == 2
    np.testing.assert_array_equal(resumed.best_model.params["a"], res.best_model.params["a"])


@pytest.mark.parametrize(("module", "name"), [
    ("pitsolve.training", "Affine"), ("pitsolve.training", "ObservedModel"),
    ("pitsolve.training.observation", "Identity"),
    ("pitsolve.training.observation", "split_observed"),
    ("pitsolve.training.forcing", "ForcedModel"),
    ("pitsolve.training.forcing", "ForcedPredictionModel"),
])
def test_moved_names_warn_and_still_work(module, name):
    import importlib

    with pytest.warns(DeprecationWarning, match=f"moved to pitsolve.models.{name}"):
        value = getattr(importlib.import_module(module), name)
    assert value is getattr(ps.models, name)
    assert not hasattr(importlib.import_module(module), "NoSuchName")
