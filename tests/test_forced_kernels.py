"""Compiled teacher-forced loops: the built-in models' loop hooks with forcing (``_loop`` /
``_loop_bptt``, dispatched by ``pitsolve.models._loops``) behind :class:`ForcedModel`'s
``sequential`` / ``bptt`` (GTF-BPTT).

The forced recurrence :math:`\\tilde z_t = (1 - a_t) \\odot f(\\tilde z_{t-1}, x_t)
+ a_t \\odot \\hat z_t` is checked against the generic step loop and :meth:`Model.bptt` of
:class:`ForcedModel` (built from the models' VJPs only), against central finite differences
of :math:`L = \\sum_t \\langle g_t, \\tilde z_t \\rangle`, and end to end: GTF-BPTT's gradient
equals GTF-DEER's.
"""

from __future__ import annotations

import numpy as np
import pytest

import pitsolve as ps
from pitsolve.models import ALRNN, GRU, ClippedShPLRNN, Elman, ForcedModel, LinearSSM, ShPLRNN
from pitsolve.models._loops import run_loop, run_loop_bptt
from pitsolve.models.base import Model, step_loop

SQRT_EPS = float(np.sqrt(np.finfo(np.float64).eps))
T = 10
BATCH_SHAPES = [(), (3,)]


def _plrnn(cls):
    rng = np.random.default_rng(3)
    M, L = 3, 6
    return cls.from_params(
        {
            "a": rng.uniform(0.5, 0.9, M),
            "W1": rng.normal(0.0, 0.6 / np.sqrt(L), (M, L)),
            "W2": rng.normal(0.0, 1.0 / np.sqrt(M), (L, M)),
            "h1": rng.normal(0.0, 0.3, M),
            "h2": rng.normal(0.0, 0.3, L),
        }
    )


MODELS = {
    "shplrnn": lambda: _plrnn(ShPLRNN),
    "clipped": lambda: _plrnn(ClippedShPLRNN),
    "alrnn": lambda: ALRNN(4, 2, seed=1).replace(h=np.random.default_rng(4).normal(0, 0.3, 4)),
    "elman": lambda: Elman(4, 2, seed=1).replace(b=np.full(4, 0.1)),
    "elman_autonomous": lambda: Elman(4, 0, seed=1),
    "gru": lambda: GRU(4, 2, seed=1),
    "gru_autonomous": lambda: GRU(4, 0, seed=1),
}
AUTONOMOUS = ["shplrnn", "clipped", "alrnn", "elman_autonomous", "gru_autonomous"]


def _data(model, lead, seed=0, dtype=np.float64, T_in=T):
    """``h0`` and the forced model's inputs ``[x, ẑ, a]`` (``T_in`` steps), states, ``g``."""
    rng = np.random.default_rng(seed)
    D, N = model.state_dim, model.input_dim
    h0 = rng.normal(size=(*lead, D))
    x = rng.normal(size=(*lead, T_in, N))
    zhat = rng.normal(size=(*lead, T_in, D))
    a = rng.uniform(0.0, 1.0, (*lead, T_in, D))
    a[..., 1::4, :] = 0.0  # plain steps and fully forced ones (STF) too
    a[..., 2::5, :] = 1.0
    inputs = np.concatenate([x, zhat, a], axis=-1).astype(dtype)
    h0 = h0.astype(dtype)
    states = ForcedModel(model).sequential(h0, inputs, T)
    g = rng.normal(size=states.shape).astype(dtype)
    return h0, inputs, states, g


def _assert_rel(a, b, rtol):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-300)
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * scale)


def _assert_params(p, q, rtol):
    assert list(p) == list(q)
    for k in p:
        _assert_rel(p[k], q[k], rtol)


# -- the compiled loops are taken, and equal the generic ones ----------------------------------
@pytest.mark.parametrize("lead", BATCH_SHAPES, ids=str)
@pytest.mark.parametrize("name", MODELS)
def test_sequential_matches_step_loop(name, lead, monkeypatch):
    model = MODELS[name]()
    fm = ForcedModel(model)
    h0, inputs, _, _ = _data(model, lead)
    ref = step_loop(fm, h0, inputs, T)
    calls = []
    fast = type(model)._loop
    monkeypatch.setattr(type(model), "_loop", lambda *args: calls.append(args[3]) or fast(*args))
    got = fm.sequential(h0, inputs, T)
    assert calls[0] is not None, "the forcing did not reach the compiled loop"
    assert calls, "ForcedModel.sequential did not use the compiled loop"
    assert got.shape == (*lead, T, model.state_dim) and got.dtype == np.float64
    _assert_rel(got, ref, 1e-13)


@pytest.mark.parametrize("lead", BATCH_SHAPES, ids=str)
@pytest.mark.parametrize("name", MODELS)
def test_bptt_matches_generic(name, lead, monkeypatch):
    model = MODELS[name]()
    fm = ForcedModel(model)
    h0, inputs, states, g = _data(model, lead, seed=1)
    ref = Model.bptt(fm, h0, inputs, states, g)
    calls = []
    fast = type(model)._loop_bptt
    monkeypatch.setattr(type(model), "_loop_bptt",
                        lambda *args: calls.append(args[5]) or fast(*args))
    p, hb, xb = fm.bptt(h0, inputs, states, g)
    assert calls[0] is not None, "the forcing did not reach the compiled loop"
    assert calls, "ForcedModel.bptt did not use the compiled loop"
    _assert_params(p, ref[0], 1e-12)
    _assert_rel(hb, ref[1], 1e-12)
    _assert_rel(xb, ref[2], 1e-12)
    assert hb.shape == h0.shape and xb.shape == inputs.shape and xb.dtype == np.float64
    for k, v in p.items():
        assert v.shape == model.params[k].shape and v.dtype == np.float64


def _loss(model, h0, inputs, g):
    return float(np.sum(g * ForcedModel(model).sequential(h0, inputs, T)))


def _fd_check(d_analytic, fun, x, v, scale):
    eps = SQRT_EPS * max(1.0, float(np.max(np.abs(x), initial=0.0)))
    d_fd = (fun(x + eps * v) - fun(x - eps * v)) / (2 * eps)
    assert abs(d_analytic - d_fd) <= 5e-8 * scale + 1e-7 * abs(d_fd), (d_analytic, d_fd)


@pytest.mark.parametrize("lead", BATCH_SHAPES, ids=str)
@pytest.mark.parametrize("name", MODELS)
def test_bptt_matches_finite_differences(name, lead):
    model = MODELS[name]()
    h0, inputs, states, g = _data(model, lead, seed=2)
    p, hb, xb = ForcedModel(model).bptt(h0, inputs, states, g)
    rng = np.random.default_rng(5)
    scale = max(1.0, float(np.sum(np.abs(g * states))))
    theta = model.params.flatten()
    v = rng.normal(size=theta.shape)
    _fd_check(
        float(p.flatten() @ v),
        lambda th: _loss(model.replace(model.params.unflatten(th)), h0, inputs, g),
        theta,
        v,
        scale,
    )
    v = rng.normal(size=h0.shape)
    _fd_check(float(np.sum(hb * v)), lambda h: _loss(model, h, inputs, g), h0, v, scale)
    # x, ẑ and a, each in a direction of its own
    N, D = model.input_dim, model.state_dim
    for sl in (slice(0, N), slice(N, N + D), slice(N + D, N + 2 * D)):
        if sl.stop == sl.start:
            continue
        v = np.zeros(inputs.shape)
        v[..., sl] = rng.normal(size=v[..., sl].shape)
        _fd_check(float(np.sum(xb * v)), lambda u: _loss(model, h0, u, g), inputs, v, scale)


# -- float32, no forcing, broadcasting, longer inputs, fallbacks -------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_float32_preserved(name):
    model = MODELS[name]()
    m32 = model.astype(np.float32)
    h0, inputs, states, g = _data(model, (2,), seed=3)
    h0_32, in32, g32 = h0.astype(np.float32), inputs.astype(np.float32), g.astype(np.float32)
    fm32 = ForcedModel(m32)
    s32 = fm32.sequential(h0_32, in32, T)
    assert s32.dtype == np.float32
    _assert_rel(s32, states, 1e-5)
    _assert_rel(s32, step_loop(fm32, h0_32, in32, T), 1e-5)
    p, hb, xb = fm32.bptt(h0_32, in32, s32, g32)
    assert hb.dtype == xb.dtype == np.float32 and all(v.dtype == np.float32 for v in p.values())
    p64, hb64, xb64 = ForcedModel(model).bptt(h0, inputs, states, g)
    _assert_rel(p.flatten(), p64.flatten(), 1e-3)
    _assert_rel(hb, hb64, 1e-3)
    _assert_rel(xb, xb64, 1e-3)


@pytest.mark.parametrize("name", MODELS)
def test_zero_forcing_is_the_plain_recurrence(name):
    """a = 0: the forced loops give exactly the plain ones (and ẑ's cotangent is zero)."""
    model = MODELS[name]()
    rng = np.random.default_rng(7)
    D, N = model.state_dim, model.input_dim
    h0 = rng.normal(size=(2, D))
    x = rng.normal(size=(2, T, N))
    zhat, a = rng.normal(size=(2, T, D)), np.zeros((2, T, D))
    inputs = np.concatenate([x, zhat, a], axis=-1)
    x = x if N else None
    states = model.sequential(h0, x, T)
    np.testing.assert_array_equal(ForcedModel(model).sequential(h0, inputs, T), states)
    g = rng.normal(size=states.shape)
    p, hb, inputs_bar = ForcedModel(model).bptt(h0, inputs, states, g)
    p_ref, hb_ref, xb_ref = model.bptt(h0, x, states, g)
    _assert_params(p, p_ref, 1e-14)
    _assert_rel(hb, hb_ref, 1e-14)
    if x is not None:
        _assert_rel(inputs_bar[..., :N], xb_ref, 1e-14)
    assert not inputs_bar[..., N : N + D].any()  # ẑ's cotangent


@pytest.mark.parametrize("name", ["shplrnn", "alrnn", "elman", "gru"])
def test_shared_forcing_broadcasts_and_longer_inputs(name):
    """A forcing shared over the batch gets its cotangent summed; steps beyond T get zero."""
    model = MODELS[name]()
    rng = np.random.default_rng(8)
    D, N = model.state_dim, model.input_dim
    h0 = rng.normal(size=(3, D))
    x = rng.normal(size=(3, T + 2, N)) if N else None
    zhat = rng.normal(size=(T + 2, D))
    a = np.broadcast_to(rng.uniform(0, 1, D), (T + 2, D))
    zf, af = (np.broadcast_to(v, (3, T + 2, D)).copy() for v in (zhat, a))
    states = run_loop(model, h0, x, T, zhat, a)
    np.testing.assert_array_equal(states, run_loop(model, h0, x, T, zf, af))
    g = rng.normal(size=states.shape)
    _, hb, xb, zb, ab = run_loop_bptt(model, h0, x, states, g, zhat, a)
    _, hb_f, xb_f, zb_f, ab_f = run_loop_bptt(model, h0, x, states, g, zf, af)
    assert zb.shape == zhat.shape and ab.shape == a.shape and hb.shape == h0.shape
    _assert_rel(zb, zb_f.sum(axis=0), 1e-13)
    _assert_rel(ab, ab_f.sum(axis=0), 1e-13)
    assert not zb[T:].any() and not ab[T:].any()
    _assert_rel(hb, hb_f, 1e-13)
    if x is not None:
        assert xb.shape == x.shape and not xb[:, T:].any()
        _assert_rel(xb, xb_f, 1e-13)


def test_models_without_forced_kernels_fall_back():
    """A base without a compiled forced loop (LinearSSM) takes the generic loops."""
    model = LinearSSM(3, 2, readout_hidden=4, seed=1)
    fm = ForcedModel(model)
    h0, inputs, states, g = _data(model, (2,), seed=9)
    _assert_rel(states, step_loop(fm, h0, inputs, T), 0.0)
    p, hb, xb = fm.bptt(h0, inputs, states, g)
    p_ref, hb_ref, xb_ref = Model.bptt(fm, h0, inputs, states, g)
    _assert_params(p, p_ref, 0.0)
    _assert_rel(hb, hb_ref, 0.0)
    _assert_rel(xb, xb_ref, 0.0)


@pytest.mark.parametrize("name", MODELS)
def test_numpy_backend_runs_the_generic_loops_with_the_same_result(name):
    """On the NumPy backend the forced model runs the Python loops of its own f and VJPs;
    they equal the compiled loops of the Numba backend."""
    model = MODELS[name]()
    h0, inputs, states, g = _data(model, (2,), seed=10)
    fast, slow = ForcedModel(model.on("numba")), ForcedModel(model.on("numpy"))
    _assert_rel(fast.sequential(h0, inputs, T), slow.sequential(h0, inputs, T), 1e-13)
    _assert_rel(slow.sequential(h0, inputs, T), step_loop(fast, h0, inputs, T), 1e-13)
    fast_b, slow_b = fast.bptt(h0, inputs, states, g), slow.bptt(h0, inputs, states, g)
    _assert_params(fast_b[0], slow_b[0], 1e-12)
    for u, w in zip(fast_b[1:], slow_b[1:], strict=True):
        _assert_rel(u, w, 1e-12)


# -- end to end: GTF-BPTT equals GTF-DEER -----------------------------------------------------
@pytest.mark.parametrize("batched", [False, True], ids=["series", "batch"])
@pytest.mark.parametrize("name", AUTONOMOUS)
def test_gtf_bptt_gradient_equals_gtf_deer(name, batched, monkeypatch):
    model = MODELS[name]()
    rng = np.random.default_rng(11)
    N = 2
    data = 0.5 * rng.normal(size=(2, 40, N) if batched else (40, N))
    forcing = ps.GTF(alpha=0.3)
    calls = []
    cls = type(model)
    # the loss is on the predictions: the shPLRNNs and the ALRNN step them (and their adjoint)
    # in one compiled pass each, Elman and GRU through their forced loops
    one_pass = hasattr(cls, "_loop_predictions")
    expected = (["_loop_predictions", "_loop_bptt_predictions"] if one_pass
                else ["_loop", "_loop_bptt"])
    for method in expected:
        fast = getattr(cls, method)
        monkeypatch.setattr(
            cls, method, lambda *args, _f=fast, _m=method: calls.append(_m) or _f(*args)
        )
    loss, grads = ps.loss_and_grad(model, data, forcing=forcing, solver=ps.Sequential())
    assert calls == expected  # GTF-BPTT ran the compiled loops
    loss_d, grads_d = ps.loss_and_grad(model, data, forcing=forcing, solver=ps.DEER(),
                                       rtol=1e-12, atol=1e-14)  # the same fixed point
    assert abs(loss - loss_d) <= 1e-10 * abs(loss_d)
    _assert_params(grads, grads_d, 1e-8)
