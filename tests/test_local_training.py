"""Training with local objectives on Schwarz windows (D'Amore decomposition)."""

from __future__ import annotations

import numpy as np
import pytest

import pitsolve as ps
from pitsolve.training import LocalObjective
from pitsolve.training.local import LocalTraining
from pitsolve.training.losses import loss_and_grad

FORCING = ps.GTF(alpha=0.3)


@pytest.fixture(scope="module")
def data():
    return ps.dsr.lorenz63(T=600, dt=0.01, seed=1)


def student():
    return ps.models.ShPLRNN(3, 8, seed=5)


def trainer(data, start="trajectory", *, mu=1.0, sync="allreduce", **kw):
    alg = ps.Schwarz(windows=4, overlap=10, **kw)
    return LocalTraining(student(), data, FORCING, alg, ps.optim.Adam(lr=1e-2), {},
                         objective=LocalObjective(mu=mu, sync=sync), start=start)


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
    loss = tr.step().loss  # the first step is evaluated at the consistent start
    ref, _ = loss_and_grad(student(), data, forcing=FORCING, solver=ps.Sequential())
    assert loss == pytest.approx(ref, rel=1e-10)
    assert tr.loss() == pytest.approx(ref, rel=1e-10)


def test_local_training_reaches_the_global_loss(data):
    opt = ps.optim.Adam(lr=1e-2)
    glob = ps.fit(student(), data, forcing=FORCING, solver=ps.Sequential(), optimizer=opt,
                  epochs=10, steps_per_epoch=20, seq_len=None)
    local = ps.fit(student(), data, forcing=FORCING, optimizer=opt, epochs=10,
                   steps_per_epoch=20, seq_len=None, solver=ps.Schwarz(windows=4, overlap=10),
                   objective=LocalObjective(mu=0.1))
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
        alg = ps.Schwarz(windows=4, overlap=10)
        lr = ps.optim.ExponentialDecay(lr_start=1e-2, lr_end=1e-4, steps=200)
        tr = LocalTraining(student(), data, FORCING, alg, ps.optim.Adam(lr=lr), {},
                           objective=LocalObjective(mu=mu), start="data")
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
    alg = ps.Schwarz(windows=4, overlap=10)
    with pytest.raises(ValueError, match="seq_len=None"):
        ps.fit(student(), data, solver=alg, objective="local", epochs=1)
    with pytest.raises(ValueError, match="needs checkpoint=PATH"):
        ps.fit(student(), data, solver=alg, objective="local", epochs=1, seq_len=None,
               resume=True)
    with pytest.raises(TypeError, match="Schwarz"):
        ps.fit(student(), data, solver=ps.DEER(), objective="local", epochs=1, seq_len=None)
    with pytest.raises(ValueError, match="regularization"):
        ps.fit(student(), data, solver=alg, objective="local", epochs=1, seq_len=None,
               regularization=ps.training.Regularization(latent=0.1))


# -- checkpoints and exact resume ---------------------------------------------------------------
class Scores:
    """Validation scores by epoch (``start``: the epoch a resumed run begins after)."""

    table = (3.0, 1.0, float("nan"), 2.0, 5.0)

    def __init__(self, start=0):
        self.epoch = start

    def __call__(self, model):
        self.epoch += 1
        return self.table[self.epoch - 1]


def local_fit(data, *, engine="serial", sync="allreduce", epochs=5, **kw):
    alg = ps.Schwarz(windows=4, overlap=10, inner=ps.DEER(), engine=engine, workers=2)
    opts = dict(forcing=ps.GTF(alpha="adaptive", update_every=2), solver=alg, seq_len=None,
                objective=LocalObjective(mu=0.5, sync=sync),
                optimizer=ps.optim.Adam(lr=1e-2), steps_per_epoch=3)
    return ps.fit(student(), data, epochs=epochs, **{**opts, **kw})


def assert_same_checkpoints(a, b):
    (arrays_a, meta_a), (arrays_b, meta_b) = (ps.training.load_checkpoint(x) for x in (a, b))
    assert sorted(arrays_a) == sorted(arrays_b)
    for k in arrays_a:  # the model, every window's θ_p, b_p, moments, α, trajectory; the best
        np.testing.assert_array_equal(arrays_a[k], arrays_b[k], err_msg=k)
    for meta in (meta_a, meta_b):
        for s in meta["stats"]:
            del s["wall_time"]
    assert meta_a == meta_b


@pytest.mark.parametrize("sync", ["allreduce", "neighbour"])
@pytest.mark.parametrize("engines", [("serial", "serial"), ("threads", "threads"),
                                     ("serial", "threads")], ids="-".join)
def test_local_resume_gives_the_uninterrupted_result(data, tmp_path, sync, engines):
    """5 epochs = 3 epochs checkpointed every 2 (so the file holds epoch 2) + a resume to 5:
    histories, model, every window's variables and optimiser state, best model — bitwise."""
    first, then = engines
    full = local_fit(data, sync=sync, engine=first, validate=Scores(),
                     checkpoint=tmp_path / "full.npz")
    part = local_fit(data, sync=sync, engine=first, validate=Scores(), checkpoint_every=2,
                     checkpoint=tmp_path / "c.npz", callbacks=[lambda info: info["epoch"] == 3])
    assert part.epochs == 3 and part.checkpoint == str(tmp_path / "c.npz")
    arrays, meta = ps.training.load_checkpoint(tmp_path / "c.npz")
    assert meta["epoch"] == 2 and meta["objective"] == "local" and int(arrays["steps"]) == 6
    assert meta["schwarz"] == {"T": 599, "windows": 4, "overlap": 10, "sync": sync, "mu": 0.5,
                               "bounds": [0, 150, 300, 450, 599]}
    assert "window/0/var/initial_state" not in arrays and "window/3/opt/m/initial_state" in arrays
    resumed = local_fit(data, sync=sync, engine=then, validate=Scores(start=2),
                        checkpoint=tmp_path / "c.npz", resume=True)
    assert resumed.epochs == 5 and resumed.stopped is None
    assert resumed.loss_history == full.loss_history
    assert resumed.alpha_history == full.alpha_history
    assert resumed.validation_history == full.validation_history
    assert (resumed.best_epoch, resumed.best_score) == (full.best_epoch, full.best_score) == (2, 1)
    for k in full.model.params:
        np.testing.assert_array_equal(resumed.model.params[k], full.model.params[k])
        np.testing.assert_array_equal(resumed.best_model.params[k], full.best_model.params[k])
    assert_same_checkpoints(tmp_path / "full.npz", tmp_path / "c.npz")
    if sync == "neighbour":  # the windows' copies θ_p differ: each one is restored
        arrays, _ = ps.training.load_checkpoint(tmp_path / "c.npz")
        assert not np.array_equal(arrays["window/0/var/W1"], arrays["window/1/var/W1"])


def test_ctrl_c_in_local_training_saves_the_last_epoch(data, tmp_path):
    class Interrupted(ps.optim.Adam):
        def update(self, params, grads, state):
            if state.step == 7:  # in epoch 3 (3 steps per epoch)
                raise KeyboardInterrupt
            return super().update(params, grads, state)

    full = local_fit(data, epochs=4, checkpoint=tmp_path / "full.npz")
    stopped = local_fit(data, epochs=4, optimizer=Interrupted(lr=1e-2),
                        checkpoint=tmp_path / "c.npz")
    assert stopped.stopped == "interrupted (Ctrl-C)" and stopped.epochs == 2
    assert ps.training.load_checkpoint(tmp_path / "c.npz")[1]["epoch"] == 2
    resumed = local_fit(data, epochs=4, checkpoint=tmp_path / "c.npz", resume=True)
    assert resumed.loss_history == full.loss_history
    assert_same_checkpoints(tmp_path / "full.npz", tmp_path / "c.npz")


def test_a_checkpoint_resumes_only_the_training_that_wrote_it(data, tmp_path):
    path = tmp_path / "c.npz"
    local_fit(data, epochs=1, steps_per_epoch=1, checkpoint=path)
    for change, match in [({"windows": 5}, "windows=4 in the checkpoint but 5 now"),
                          ({"overlap": 12}, "overlap=10 in the checkpoint but 12 now"),
                          ({"sync": "neighbour"}, "sync='allreduce' in the checkpoint"),
                          ({"mu": 1.0}, "mu=0.5 in the checkpoint but 1.0 now")]:
        options = {"windows": 4, "overlap": 10, "mu": 0.5, "sync": "allreduce", **change}
        objective = LocalObjective(mu=options.pop("mu"), sync=options.pop("sync"))
        with pytest.raises(ValueError, match=match):
            local_fit(data, epochs=2, solver=ps.Schwarz(**options), objective=objective,
                      checkpoint=path, resume=True)
    with pytest.raises(ValueError, match="different Schwarz configuration: T=599"):
        local_fit(data[:-1], epochs=2, checkpoint=path, resume=True)
    glob = dict(forcing=FORCING, seq_len=50, batch_size=2, steps_per_epoch=1)
    with pytest.raises(ValueError, match=r"written by local-objective training \("
                                         r"windows=4, overlap=10, sync='allreduce', mu=0.5\)"):
        ps.fit(student(), data, epochs=2, checkpoint=path, resume=True, **glob)
    ps.fit(student(), data, epochs=1, checkpoint=tmp_path / "g.npz", **glob)
    assert ps.training.load_checkpoint(tmp_path / "g.npz")[1]["objective"] == "global"
    with pytest.raises(ValueError, match="written by global-objective training"):
        local_fit(data, epochs=2, checkpoint=tmp_path / "g.npz", resume=True)


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"sync": "gossip"}, "sync must be"), ({"mu": -1.0}, "mu must be")]
)
def test_invalid_training_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        LocalObjective(**kwargs)


def test_unknown_objective_is_an_error(data):
    with pytest.raises(ValueError, match="objective must be"):
        ps.fit(student(), data, objective="both", epochs=1)


def test_deprecated_schwarz_training_options_still_train(data):
    """``Schwarz(objective="local", mu=..., sync=...)`` warns and trains exactly as
    ``fit(..., objective=LocalObjective(mu=..., sync=...))``."""
    opts = dict(forcing=FORCING, optimizer=ps.optim.Adam(lr=1e-2), epochs=2,
                steps_per_epoch=2, seq_len=None)
    with pytest.warns(DeprecationWarning, match="LocalObjective"):
        old = ps.Schwarz(windows=4, overlap=10, objective="local", mu=0.3, sync="neighbour")
    legacy = ps.fit(student(), data, solver=old, **opts)
    new = ps.fit(student(), data, solver=ps.Schwarz(windows=4, overlap=10),
                 objective=LocalObjective(mu=0.3, sync="neighbour"), **opts)
    assert legacy.loss_history == new.loss_history
    np.testing.assert_array_equal(legacy.model.params.flatten(), new.model.params.flatten())
    with pytest.raises(ValueError, match="once"):
        ps.fit(student(), data, solver=old, objective="local", **opts)
