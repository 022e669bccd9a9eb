"""Training with local objectives on Schwarz windows (D'Amore decomposition)."""

from __future__ import annotations

import numpy as np
import pytest

import pitsolve as ps
from pitsolve.training.local import LocalTraining
from pitsolve.training.losses import loss_and_grad

FORCING = ps.GTF(alpha=0.3)


@pytest.fixture(scope="module")
def data():
    return ps.dsr.lorenz63(T=600, dt=0.01, seed=1)


def student():
    return ps.models.ShPLRNN(3, 8, seed=5)


def trainer(data, start="trajectory", **kw):
    alg = ps.Schwarz(windows=4, overlap=10, objective="local", **kw)
    return LocalTraining(student(), data, FORCING, alg, ps.optim.Adam(lr=1e-2), {}, start=start)


@pytest.mark.parametrize("p", [0, 2, 3])
def test_local_gradient_matches_finite_differences(data, p):
    tr = trainer(data, start="data", mu=0.7)
    tr.step()  # move off the initial point; neighbours' rows now differ from window p's
    sols = {q: tr._forward(q) for q in tr.local}
    left, right = tr._messages()
    grads = tr._gradient(p, sols[p], left[p], right[p])
    variables = tr.windows[p].variables
    x0 = variables.flatten()
    rng = np.random.default_rng(p)
    for _ in range(4):  # random directions through all variables
        v = rng.normal(size=x0.shape)
        eps = 1e-6
        jp = tr.objective(p, variables.unflatten(x0 + eps * v), left[p], right[p])
        jm = tr.objective(p, variables.unflatten(x0 - eps * v), left[p], right[p])
        fd = (jp - jm) / (2 * eps)
        assert abs(grads.flatten() @ v - fd) <= 1e-6 * max(1.0, abs(fd)), (p, fd)
    assert ("initial_state" in grads) == (p > 0)


def test_windows_sum_to_the_global_loss_when_consistent(data):
    tr = trainer(data, mu=5.0)
    loss = tr.step()  # the first step is evaluated at the consistent start
    ref, _ = loss_and_grad(student(), data, forcing=FORCING, solver=ps.Sequential())
    assert loss == pytest.approx(ref, rel=1e-10)
    assert tr.loss() == pytest.approx(ref, rel=1e-10)


def test_local_training_reaches_the_global_loss(data):
    opt = ps.optim.Adam(lr=1e-2)
    glob = ps.fit(student(), data, forcing=FORCING, solver=ps.Sequential(), optimizer=opt,
                  epochs=10, steps_per_epoch=20, seq_len=None)
    local = ps.fit(student(), data, forcing=FORCING, optimizer=opt, epochs=10,
                   steps_per_epoch=20, seq_len=None,
                   solver=ps.Schwarz(windows=4, overlap=10, objective="local", mu=0.1))
    g_loss, _ = loss_and_grad(glob.model, data, forcing=FORCING, solver=ps.Sequential())
    l_loss, _ = loss_and_grad(local.model, data, forcing=FORCING, solver=ps.Sequential())
    start, _ = loss_and_grad(student(), data, forcing=FORCING, solver=ps.Sequential())
    assert l_loss < 0.01 * start
    assert l_loss < 1.25 * g_loss, (l_loss, g_loss)
    assert local.stats[-1]["overlap_mismatch"] < 1e-2


def test_mismatch_shrinks_as_mu_grows(data):
    """From initial states on the data, μ pulls neighbouring windows together."""
    mismatch = []
    for mu in (0.01, 1.0, 100.0):
        alg = ps.Schwarz(windows=4, overlap=10, objective="local", mu=mu)
        lr = ps.optim.ExponentialDecay(lr_start=1e-2, lr_end=1e-4, steps=200)
        tr = LocalTraining(student(), data, FORCING, alg, ps.optim.Adam(lr=lr), {}, start="data")
        for _ in range(200):
            tr.step()
        mismatch.append(tr.mismatch())
    assert mismatch[0] > 5 * mismatch[1] > 25 * mismatch[2], mismatch


def test_neighbour_sync_trains_without_collectives(data):
    tr = trainer(data, mu=0.1, sync="neighbour")
    tr.step()
    start = tr.loss()
    for _ in range(200):
        tr.step()
    assert tr.loss() < 0.1 * start
    copies = np.array([tr._theta(w.variables).flatten() for w in tr.windows.values()])
    spread = np.abs(copies - copies.mean(0)).max()
    assert spread < 0.05 * np.abs(copies).max()  # consensus keeps the copies together


def test_consensus_preserves_the_average(data):
    tr = trainer(data, sync="neighbour")
    rng = np.random.default_rng(0)
    for w in tr.windows.values():  # scramble the copies
        theta = tr._theta(w.variables)
        new = theta.unflatten(theta.flatten() + rng.normal(size=theta.size))
        w.variables = w.variables.replace(**dict(new.items()))
    before = np.mean([tr._theta(w.variables).flatten() for w in tr.windows.values()], axis=0)
    spread0 = np.ptp([tr._theta(w.variables).flatten() for w in tr.windows.values()], axis=0)
    tr._consensus()
    after = np.array([tr._theta(w.variables).flatten() for w in tr.windows.values()])
    np.testing.assert_allclose(after.mean(0), before, atol=1e-12)
    assert np.ptp(after, axis=0).max() < spread0.max()


def test_threads_engine_equals_serial(data):
    runs = []
    for engine in ("serial", "threads"):
        tr = trainer(data, engine=engine, workers=2, mu=1.0)
        for _ in range(5):
            tr.step()
        runs.append(tr.model().params.flatten())
    np.testing.assert_array_equal(runs[0], runs[1])


def test_fit_rejects_what_local_training_cannot_do(data):
    alg = ps.Schwarz(windows=4, overlap=10, objective="local")
    with pytest.raises(ValueError, match="seq_len=None"):
        ps.fit(student(), data, solver=alg, epochs=1)
    with pytest.raises(ValueError, match="checkpoints are not supported"):
        ps.fit(student(), data, solver=alg, epochs=1, seq_len=None, checkpoint="x.ckpt")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"objective": "both"}, "objective must be"), ({"sync": "gossip"}, "sync must be"),
     ({"mu": -1.0}, "mu must be")],
)
def test_invalid_training_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ps.Schwarz(**kwargs)
