"""Sequential backpropagation through time (``Model.bptt``) of every built-in model.

The compiled loops are checked against the generic Python loop of :class:`Model` (which uses
only the models' VJPs) and both against central finite differences of
:math:`L = \\sum_t \\langle g_t, h_t \\rangle` with the states from ``model.sequential``.
"""

from __future__ import annotations

import numpy as np
import pytest

from pitsolve.models import ALRNN, GRU, ClippedShPLRNN, Elman, LinearSSM, ShPLRNN
from pitsolve.models.base import Model, Params
from pitsolve.models.ode import Lorenz63, ODEStep, VectorField

SQRT_EPS = float(np.sqrt(np.finfo(np.float64).eps))
T = 12
BATCH_SHAPES = [(), (2,), (2, 3)]


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


def _alrnn():
    m = ALRNN(4, 2, seed=1)
    return m.replace(h=np.random.default_rng(4).normal(0.0, 0.3, 4))


def _ssm():
    m = LinearSSM(3, 2, readout_hidden=4, seed=1)
    return m.replace(B=np.random.default_rng(5).normal(size=(3, 2)))


MODELS = {
    "shplrnn": lambda: _plrnn(ShPLRNN),
    "clipped": lambda: _plrnn(ClippedShPLRNN),
    "alrnn": _alrnn,
    "elman": lambda: Elman(4, 2, seed=1).replace(b=np.full(4, 0.1)),
    "elman_autonomous": lambda: Elman(4, 0, seed=1),
    "gru": lambda: GRU(4, 2, seed=1),
    "gru_autonomous": lambda: GRU(4, 0, seed=1),
    "ssm": _ssm,
    "lorenz_rk4": lambda: ODEStep(Lorenz63(), dt=0.01),
}


def _data(model, lead, seed=0, dtype=np.float64):
    """``h0``, ``inputs`` (None for autonomous models), the states and cotangents ``g``."""
    rng = np.random.default_rng(seed)
    scale = 3.0 if isinstance(model, ODEStep) else 1.0
    h0 = (scale * rng.normal(size=(*lead, model.state_dim))).astype(dtype)
    x = None
    if model.input_dim:
        x = rng.normal(size=(*lead, T, model.input_dim)).astype(dtype)
    states = model.sequential(h0, x, T)
    g = rng.normal(size=states.shape).astype(dtype)
    return h0, x, states, g


def _loss(model, h0, x, g):
    return float(np.sum(g * model.sequential(h0, x, T)))


def _assert_rel(a, b, rtol):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape
    scale = max(float(np.max(np.abs(b), initial=0.0)), 1e-300)
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * scale)


def _assert_params_equal(p, q, rtol):
    assert list(p) == list(q)
    for k in p:
        _assert_rel(p[k], q[k], rtol)


def _fd_check(d_analytic, fun, x, v, scale):
    """``d_analytic ≈ (fun(x + εv) − fun(x − εv)) / 2ε``, ``ε = √eps·max(1, |x|)``.

    ``scale`` bounds the loss's terms (``Σ|g·h|``): its rounding, divided by ε, is about
    ``√eps·scale``; the truncation error is O(ε²) relative.
    """
    eps = SQRT_EPS * max(1.0, float(np.max(np.abs(x), initial=0.0)))
    d_fd = (fun(x + eps * v) - fun(x - eps * v)) / (2 * eps)
    assert abs(d_analytic - d_fd) <= 5e-8 * scale + 1e-7 * abs(d_fd), (d_analytic, d_fd)


# -- the compiled loops equal the generic one --------------------------------------------------
@pytest.mark.parametrize("lead", BATCH_SHAPES, ids=str)
@pytest.mark.parametrize("name", MODELS)
def test_bptt_matches_generic_loop(name, lead):
    model = MODELS[name]()
    h0, x, states, g = _data(model, lead)
    p, hb, xb = model.bptt(h0, x, states, g)
    p_ref, hb_ref, xb_ref = Model.bptt(model, h0, x, states, g)
    _assert_params_equal(p, p_ref, 1e-12)
    _assert_rel(hb, hb_ref, 1e-12)
    assert hb.shape == h0.shape and hb.dtype == np.float64
    if x is None:
        assert xb is None and xb_ref is None
    else:
        assert xb.shape == x.shape and xb.dtype == np.float64
        _assert_rel(xb, xb_ref, 1e-12)
    for k, v in p.items():
        assert v.shape == model.params[k].shape and v.dtype == np.float64


# -- both against finite differences -----------------------------------------------------------
@pytest.mark.parametrize("lead", BATCH_SHAPES, ids=str)
@pytest.mark.parametrize("name", MODELS)
def test_bptt_matches_finite_differences(name, lead):
    model = MODELS[name]()
    h0, x, states, g = _data(model, lead, seed=1)
    p, hb, xb = model.bptt(h0, x, states, g)
    rng = np.random.default_rng(2)
    scale = max(1.0, float(np.sum(np.abs(g * states))))  # size of the loss's rounding

    # a random direction in parameter space
    theta = model.params.flatten()
    v = rng.normal(size=theta.shape)
    d = float(p.flatten() @ v)
    _fd_check(
        d,
        lambda th: _loss(model.replace(model.params.unflatten(th)), h0, x, g),
        theta,
        v,
        scale,
    )
    # h0 and the inputs
    v = rng.normal(size=h0.shape)
    _fd_check(float(np.sum(hb * v)), lambda h: _loss(model, h, x, g), h0, v, scale)
    if x is not None:
        v = rng.normal(size=x.shape)
        _fd_check(float(np.sum(xb * v)), lambda xx: _loss(model, h0, xx, g), x, v, scale)


# -- float32 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", MODELS)
def test_bptt_float32(name):
    model = MODELS[name]()
    m32 = model.astype(np.float32)
    h0, x, states, g = _data(model, (2,), seed=3)
    h0_32, g32 = h0.astype(np.float32), g.astype(np.float32)
    x32 = None if x is None else x.astype(np.float32)
    states32 = m32.sequential(h0_32, x32, T)
    assert states32.dtype == np.float32
    p, hb, xb = m32.bptt(h0_32, x32, states32, g32)
    p64, hb64, xb64 = model.bptt(h0, x, states, g)
    assert all(v.dtype == np.float32 for v in p.values())
    assert hb.dtype == np.float32
    _assert_rel(p.flatten(), p64.flatten(), 1e-3)
    _assert_rel(hb, hb64, 1e-3)
    if x is not None:
        assert xb.dtype == np.float32
        _assert_rel(xb, xb64, 1e-3)
    # and the float32 computation agrees with the generic loop in float32
    p_ref, hb_ref, _ = Model.bptt(m32, h0_32, x32, states32, g32)
    assert hb_ref.dtype == np.float32 and all(v.dtype == np.float32 for v in p_ref.values())
    _assert_rel(p.flatten(), p_ref.flatten(), 1e-4)


# -- broadcasting, inputs longer than T, errors ------------------------------------------------
@pytest.mark.parametrize("name", ["elman", "gru", "ssm", "shplrnn"])
def test_bptt_broadcast_h0_and_inputs(name):
    """A shared ``h0 (D,)`` and ``inputs (T, N_x)`` get their cotangents summed over the batch."""
    model = MODELS[name]()
    rng = np.random.default_rng(6)
    D, N = model.state_dim, model.input_dim
    h0 = rng.normal(size=D)
    x = rng.normal(size=(T, N)) if N else None
    g = rng.normal(size=(2, 3, T, D))
    h0_full = np.broadcast_to(h0, (2, 3, D)).copy()
    x_full = None if x is None else np.broadcast_to(x, (2, 3, T, N)).copy()
    states = model.sequential(h0_full, x_full, T)
    p, hb, xb = model.bptt(h0, x, states, g)
    p_full, hb_full, xb_full = model.bptt(h0_full, x_full, states, g)
    p_ref, hb_ref, xb_ref = Model.bptt(model, h0, x, states, g)
    _assert_params_equal(p, p_full, 1e-13)
    _assert_params_equal(p, p_ref, 1e-12)
    assert hb.shape == (D,)
    _assert_rel(hb, hb_full.sum(axis=(0, 1)), 1e-13)
    _assert_rel(hb, hb_ref, 1e-12)
    if x is not None:
        assert xb.shape == (T, N)
        _assert_rel(xb, xb_full.sum(axis=(0, 1)), 1e-13)
        _assert_rel(xb, xb_ref, 1e-12)


def test_bptt_inputs_longer_than_T():
    model = MODELS["elman"]()
    h0, x, states, g = _data(model, (2,))
    x_long = np.concatenate([x, np.ones((2, 3, model.input_dim))], axis=1)
    p, hb, xb = model.bptt(h0, x_long, states, g)
    p_ref, hb_ref, xb_ref = model.bptt(h0, x, states, g)
    assert xb.shape == x_long.shape
    np.testing.assert_array_equal(xb[:, :T], xb_ref)
    np.testing.assert_array_equal(xb[:, T:], 0.0)
    np.testing.assert_array_equal(hb, hb_ref)
    np.testing.assert_array_equal(p.flatten(), p_ref.flatten())
    _, _, xb_gen = Model.bptt(model, h0, x_long, states, g)
    _assert_rel(xb, xb_gen, 1e-12)


def test_bptt_errors():
    model = MODELS["elman"]()
    h0, x, states, g = _data(model, (2,))
    with pytest.raises(ValueError, match="states"):
        model.bptt(h0, x, states[..., :3], g)
    with pytest.raises(ValueError, match="g must"):
        model.bptt(h0, x, states, g[:, :-1])
    with pytest.raises(ValueError, match="needs inputs"):
        model.bptt(h0, None, states, g)
    with pytest.raises(ValueError, match="h0"):
        Model.bptt(model, h0[..., :2], x, states, g)


def test_bptt_the_elman_variant_reading_states():
    """Reading h_t from the states instead of recomputing it agrees on a trajectory."""
    model = MODELS["elman"]()
    h0, x, states, g = _data(model, (2, 3))
    stored = model.replace()
    stored._bptt_recompute = False
    p, hb, xb = stored.bptt(h0, x, states, g)
    p_ref, hb_ref, xb_ref = model.bptt(h0, x, states, g)
    _assert_params_equal(p, p_ref, 1e-12)
    _assert_rel(hb, hb_ref, 1e-12)
    _assert_rel(xb, xb_ref, 1e-12)


# -- the generic loop serves user models -------------------------------------------------------
class _Affine(Model):
    """A user model ``h' = A h + C x + c`` with only the required methods."""

    def __init__(self, params):
        super().__init__(Params(params), state_dim=3, input_dim=2)

    def f(self, h, x=None):
        p = self.params
        return h @ p["A"].T + x @ p["C"].T + p["c"]

    def jacobian(self, h, x=None):
        return np.broadcast_to(self.params["A"], (*h.shape, 3)).copy()

    def vjp_params(self, h, x, u):
        h, x, u = h.reshape(-1, 3), x.reshape(-1, 2), u.reshape(-1, 3)
        return Params(A=u.T @ h, C=u.T @ x, c=u.sum(axis=0))

    def vjp_inputs(self, h, x, u):
        return u @ self.params["C"]


class _LinearField(VectorField):
    """A user field ``g(h) = K h`` (no compiled loops: ODEStep takes the generic method)."""

    def __init__(self, K):
        super().__init__(Params(K=K), state_dim=K.shape[0])

    def g(self, h):
        return h @ self.params["K"].T

    def jacobian(self, h):
        return np.broadcast_to(self.params["K"], (*h.shape, h.shape[-1])).copy()

    def vjp_params(self, h, u):
        h, u = h.reshape(-1, h.shape[-1]), u.reshape(-1, u.shape[-1])
        return Params(K=u.T @ h)


@pytest.mark.parametrize(
    "make",
    [
        lambda rng: _Affine(
            {"A": 0.5 * rng.normal(size=(3, 3)), "C": rng.normal(size=(3, 2)), "c": np.ones(3)}
        ),
        lambda rng: ODEStep(_LinearField(rng.normal(size=(3, 3))), dt=0.05),
    ],
    ids=["affine", "user_field"],
)
def test_bptt_generic_loop_for_user_models(make):
    model = make(np.random.default_rng(7))
    h0, x, states, g = _data(model, (2,), seed=8)
    p, hb, xb = model.bptt(h0, x, states, g)
    rng = np.random.default_rng(9)
    scale = max(1.0, float(np.sum(np.abs(g * states))))
    theta = model.params.flatten()
    v = rng.normal(size=theta.shape)
    _fd_check(
        float(p.flatten() @ v),
        lambda th: _loss(model.replace(model.params.unflatten(th)), h0, x, g),
        theta,
        v,
        scale,
    )
    v = rng.normal(size=h0.shape)
    _fd_check(float(np.sum(hb * v)), lambda h: _loss(model, h, x, g), h0, v, scale)
    if x is not None:
        v = rng.normal(size=x.shape)
        _fd_check(float(np.sum(xb * v)), lambda xx: _loss(model, h0, xx, g), x, v, scale)


# -- GPU: CuPy arrays take the generic loop ----------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("name", ["shplrnn", "gru", "ssm"])
def test_bptt_cupy_matches_numpy(name):
    import cupy

    model = MODELS[name]()
    h0, x, states, g = _data(model, (2,))
    p, hb, xb = model.bptt(h0, x, states, g)
    mc = model.replace(model.params.map(cupy.asarray))
    xc = None if x is None else cupy.asarray(x)
    pc, hbc, xbc = mc.bptt(cupy.asarray(h0), xc, cupy.asarray(states), cupy.asarray(g))
    assert isinstance(hbc, cupy.ndarray)
    _assert_rel(cupy.asnumpy(pc.flatten()), p.flatten(), 1e-10)
    _assert_rel(cupy.asnumpy(hbc), hb, 1e-10)
    if x is not None:
        _assert_rel(cupy.asnumpy(xbc), xb, 1e-10)
