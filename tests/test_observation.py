"""Observation models (Identity, Affine with pseudo-inverse forcing) and the regularisers of the
GTF reference: hand-derived gradients against central finite differences in float64, every
solver route agreeing, and training, checkpoints and saved models carrying the observation."""

from __future__ import annotations

import numpy as np
import pytest

import pitsolve as ps
from pitsolve.models import Affine, Identity, ObservedModel, split_observed
from pitsolve.testing import check_derivatives
from pitsolve.training import Regularization
from pitsolve.training.losses import forced_loss, latent_penalty

SOLVERS = [ps.DEER(), ps.DEER(jacobian="diagonal"), ps.NewtonKrylov()]
TIGHT = {"rtol": 1e-12, "atol": 1e-14, "maxiter": 200}
FORCINGS = [ps.GTF(alpha=0.3), ps.GTF(alpha=0.4, partial=False), ps.STF(interval=3)]


def _loss(model, data, forcing, reg=None):
    return forced_loss(model, data, forcing=forcing, solver=ps.Sequential(),
                       regularization=reg)[0]


def _fd(model, data, forcing, d, reg=None, eps=1e-6):
    def shifted(s):
        return model.replace(**{k: v + s * eps * d[k] for k, v in model.params.items()})

    return (_loss(shifted(1), data, forcing, reg) - _loss(shifted(-1), data, forcing, reg)) / (
        2 * eps)


def _affine_model(N, M, seed=0):
    rng = np.random.default_rng(seed)
    obs = Affine.init(N, M, seed=seed + 1).replace(b=0.1 * rng.normal(size=N))
    return ObservedModel(ps.models.ShPLRNN(M, 8, seed=seed + 2), obs)


@pytest.mark.parametrize("forcing", FORCINGS, ids=repr)
@pytest.mark.parametrize("N", [5, 3, 2], ids=lambda n: f"N={n}")  # B tall, square, wide (M = 3)
def test_affine_gradient_matches_finite_differences(N, forcing):
    """Every parameter, the observation's through the pseudo-inverse forcing signal included,
    plus both regularisers: each gradient block against its own central difference."""
    model = _affine_model(N, 3)
    rng = np.random.default_rng(1)
    data = 0.5 * rng.normal(size=(2, 25, N))
    reg = Regularization(latent=0.01, observation=0.3)
    loss, g, _ = forced_loss(model, data, forcing=forcing, solver=ps.Sequential(),
                             regularization=reg)
    assert list(g) == list(model.params) and np.isclose(loss, _loss(model, data, forcing, reg))
    for k in model.params:
        d = {q: rng.normal(size=v.shape) if q == k else np.zeros(v.shape)
             for q, v in model.params.items()}
        fd = _fd(model, data, forcing, d, reg)
        assert np.isclose(float((g[k] * d[k]).sum()), fd, rtol=1e-6, atol=1e-10), (k, fd)
    for solver in SOLVERS:
        loss_s, g_s, _ = forced_loss(model, data, forcing=forcing, solver=solver,
                                     regularization=reg, **TIGHT)
        assert np.isclose(loss_s, loss, rtol=1e-10)
        for k in g:
            np.testing.assert_allclose(g_s[k], g[k], rtol=1e-7, atol=1e-11)


def test_detached_forcing_is_the_gradient_at_a_fixed_forcing_signal():
    """differentiate_forcing=False (the GTF reference): ẑ is data, so the gradient of B is
    that of the loss with the forcing signal held at its current value."""
    model = _affine_model(4, 3, seed=3)
    obs = model.observation
    detached = ObservedModel(model.latent, Affine(obs.params["B"], obs.params["b"],
                                                  differentiate_forcing=False))
    data = 0.5 * np.random.default_rng(2).normal(size=(30, 4))
    zhat = obs.forcing_signal(data)

    class Frozen(Affine):
        def forcing_signal(self, x, latent=None):
            return zhat

    forcing = ps.GTF(alpha=0.3)
    _, g = ps.loss_and_grad(detached, data, forcing=forcing, solver=ps.Sequential())
    _, g_exact = ps.loss_and_grad(model, data, forcing=forcing, solver=ps.Sequential())
    assert not np.allclose(g["obs.B"], g_exact["obs.B"])
    frozen = ObservedModel(model.latent, Frozen(obs.params["B"], obs.params["b"]))
    d = {k: np.random.default_rng(3).normal(size=v.shape) for k, v in frozen.params.items()}
    fd = _fd(frozen, data, forcing, d)
    assert np.isclose(sum(float((g[k] * d[k]).sum()) for k in d), fd, rtol=1e-6)


def test_identity_observation_is_the_default():
    model = ps.models.ShPLRNN(3, 8, seed=1)
    data = np.random.default_rng(0).normal(size=(40, 2))
    loss, g = ps.loss_and_grad(model, data, forcing=ps.GTF(alpha=0.3))
    loss_o, g_o = ps.loss_and_grad(ObservedModel(model, Identity()), data,
                                   forcing=ps.GTF(alpha=0.3))
    assert loss == loss_o and list(g_o) == list(g)
    for k in g:
        np.testing.assert_array_equal(g[k], g_o[k])
    assert split_observed(model)[1].__class__ is Identity
    np.testing.assert_array_equal(Identity().forcing_signal(data, 3)[:, :2], data)
    assert not Identity().forcing_signal(data, 3)[:, 2].any()


def test_affine_forcing_signal_inverts_the_observation():
    obs = Affine.init(5, 3, seed=4).replace(b=np.arange(5.0))
    z = np.random.default_rng(0).normal(size=(7, 3))
    np.testing.assert_allclose(obs.forcing_signal(obs.observe(z)), z, atol=1e-12)
    wide = Affine.init(2, 3, seed=4)  # minimum-norm latent states that reproduce x
    x = np.random.default_rng(1).normal(size=(7, 2))
    np.testing.assert_allclose(wide.observe(wide.forcing_signal(x)), x, atol=1e-12)


def test_condition_penalty_value_and_gradient():
    B = np.array([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    value, grad = Affine(B).penalty(0.5)
    assert np.isclose(value, 0.5 * (1 - 0.5) ** 2)
    obs = Affine.init(4, 3, seed=6)
    value, grad = obs.penalty(0.7)
    V = np.random.default_rng(0).normal(size=(4, 3))
    eps = 1e-6
    fd = (obs.replace(B=obs.params["B"] + eps * V).penalty(0.7)[0]
          - obs.replace(B=obs.params["B"] - eps * V).penalty(0.7)[0]) / (2 * eps)
    assert np.isclose(float((grad["B"] * V).sum()), fd, rtol=1e-7)
    assert not grad["b"].any()
    assert Affine(np.ones((1, 3))).penalty(1.0)[0] == 0.0  # one singular value: r = 1


def test_latent_penalty_pulls_self_connections_to_one():
    plrnn = ps.models.ShPLRNN(3, 4, seed=0)
    value, grad = latent_penalty(plrnn, 0.1)
    p = plrnn.params
    expected = 0.1 * (np.sum((p["a"] - 1) ** 2) + sum(np.sum(p[k] ** 2) for k in p if k != "a"))
    assert np.isclose(value, expected)
    np.testing.assert_allclose(grad["a"], 0.2 * (p["a"] - 1))
    np.testing.assert_allclose(grad["W1"], 0.2 * p["W1"])
    elman = ps.models.Elman(3, seed=0)
    value, grad = latent_penalty(elman, 1.0)
    assert np.isclose(value, sum(float(np.sum(v ** 2)) for v in elman.params.values()))


def test_observed_model_checks_and_replace():
    model = _affine_model(4, 3)
    assert list(model.params)[-2:] == ["obs.B", "obs.b"]
    new = model.replace(**{"obs.B": np.zeros((4, 3)), "a": np.ones(3)})
    assert not new.observation.params["B"].any() and (new.latent.params["a"] == 1).all()
    assert model.astype(np.float32).observation.params["B"].dtype == np.float32
    with pytest.raises(ValueError, match="N=3"):
        ps.loss_and_grad(model, np.zeros((20, 3)))
    with pytest.raises(TypeError):
        ObservedModel(model, Identity())
    with pytest.raises(TypeError):
        ObservedModel(ps.models.ShPLRNN(3, 4), "affine")
    with pytest.raises(ValueError):
        Regularization(latent=-1.0)
    check_derivatives(model, seed=1)  # the latent recurrence; obs. cotangent zero


def test_fit_resume_and_saved_model_carry_the_observation(tmp_path):
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(5, 3))
    data = np.random.default_rng(1).normal(size=(300, 3)) @ mix.T  # 5 observed dimensions
    model = ObservedModel(ps.models.ShPLRNN(3, 8, seed=0), Affine.init(5, 3, seed=1))
    kw = dict(forcing=ps.GTF(alpha=0.5), seq_len=30, batch_size=2, steps_per_epoch=3,
              optimizer=ps.optim.Adam(lr=1e-2), regularization=Regularization(observation=0.1))
    full = ps.fit(model, data, epochs=4, **kw)
    assert full.stopped is None and isinstance(full.model, ObservedModel)
    assert not np.array_equal(full.model.params["obs.B"], model.params["obs.B"])
    ps.fit(model, data, epochs=2, checkpoint=tmp_path / "c.npz", **kw)
    resumed = ps.fit(model, data, epochs=4, checkpoint=tmp_path / "c.npz", resume=True, **kw)
    for k in full.model.params:
        np.testing.assert_array_equal(resumed.model.params[k], full.model.params[k])
    path = tmp_path / "model.npz"
    ps.training.save_model(path, full.model, {"dt": 0.01})
    loaded, meta = ps.training.load_model(path)
    assert isinstance(loaded, ObservedModel) and meta["dt"] == 0.01
    for k in full.model.params:
        np.testing.assert_array_equal(loaded.params[k], full.model.params[k])
    ps.training.save_model(path, ObservedModel(ps.models.ALRNN(3, 1), Identity()))
    loaded, _ = ps.training.load_model(path)
    assert isinstance(loaded.observation, Identity) and loaded.latent.relu_units == 1
