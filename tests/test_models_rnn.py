"""Elman and GRU: hand-derived derivatives vs finite differences, the compiled loop, parameters."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pitsolve.models.base import Params
from pitsolve.models.rnn import GRU, Elman
from pitsolve.testing import check_derivatives

SQRT_EPS = float(np.sqrt(np.finfo(np.float64).eps))
BATCH_SHAPES = st.sampled_from([(), (1,), (3,), (2, 3)])
GRU_NAMES = ["Wz", "Uz", "bz", "Wr", "Ur", "br", "Wn", "Un", "bn"]


# -- central finite differences (float64, step √eps·max(1, |x|)) --------------------------------
def fd_jacobian(fun, p):
    """∂fun/∂p ``(..., m, n)`` by central differences, one column per coordinate of ``p``."""
    cols = []
    for j in range(p.shape[-1]):
        step = SQRT_EPS * np.maximum(1.0, np.abs(p[..., j : j + 1]))
        e = np.zeros_like(p)
        e[..., j : j + 1] = step
        cols.append((fun(p + e) - fun(p - e)) / (2 * step))
    return np.stack(cols, axis=-1)


def fd_param_grads(model, h, x, u):
    """∇_θ Σ⟨u, f(h, x; θ)⟩ by central differences, element by element, as a dict."""
    out = {}
    for k, theta in model.params.items():
        g = np.zeros(theta.shape)
        for i in np.ndindex(theta.shape):
            step = SQRT_EPS * max(1.0, abs(float(theta[i])))
            tp, tm = theta.copy(), theta.copy()
            tp[i] += step
            tm[i] -= step
            fp = model.replace(**{k: tp}).f(h, x)
            fm = model.replace(**{k: tm}).f(h, x)
            g[i] = np.sum(u * (fp - fm)) / (2 * step)
        out[k] = g
    return out


def close(a, b, *, rtol=1e-6, scale=None):
    """``a ≈ b`` up to FD accuracy, relative to the size of the compared quantities."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    s = max(1.0, float(np.max(np.abs(b), initial=0.0))) if scale is None else scale
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * s)


def assert_all_derivatives(model, h, x, seed):
    """Every derivative of ``model`` at ``(h, x)`` against finite differences of ``f``."""
    rng = np.random.default_rng(seed)
    v, u = rng.normal(size=h.shape), rng.normal(size=h.shape)
    J_fd = fd_jacobian(lambda hh: model.f(hh, x), h)
    J = model.jacobian(h, x)
    assert J.shape == (*h.shape, h.shape[-1])
    close(J, J_fd)
    close(model.diagonal_jacobian(h, x), np.diagonal(J_fd, 0, -2, -1))
    close(model.jvp(h, x, v), np.einsum("...ij,...j->...i", J_fd, v))
    close(model.vjp_h(h, x, u), np.einsum("...ij,...i->...j", J_fd, u))
    f1, J1 = model.f_and_jacobian(h, x)
    f2, d2 = model.f_and_diagonal_jacobian(h, x)
    np.testing.assert_allclose(f1, model.f(h, x), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(f2, model.f(h, x), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(J1, J, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(d2, np.diagonal(J, 0, -2, -1), rtol=1e-13, atol=1e-14)
    # dot-product test: ⟨u, J v⟩ = ⟨Jᵀ u, v⟩ (exact up to round-off, no FD involved)
    lhs = np.sum(u * model.jvp(h, x, v))
    rhs = np.sum(model.vjp_h(h, x, u) * v)
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs), np.abs(u).sum() * np.abs(v).sum())
    grads = model.vjp_params(h, x, u)
    assert isinstance(grads, Params)
    assert list(grads) == list(model.params)
    for k, g in fd_param_grads(model, h, x, u).items():
        assert grads[k].shape == model.params[k].shape, k
        close(grads[k], g, scale=max(1.0, float(np.abs(g).max(initial=0.0))))
    if model.input_dim:
        Jx_fd = fd_jacobian(lambda xx: model.f(h, xx), x)
        close(model.vjp_inputs(h, x, u), np.einsum("...ij,...i->...j", Jx_fd, u))
    else:
        assert model.vjp_inputs(h, x, u) is None


def make(kind, D, N, seed):
    return Elman(D, N, seed=seed) if kind == "elman" else GRU(D, N, seed=seed)


def redrawn(model, seed, scale=1.0):
    """The model with every parameter redrawn at ``scale`` (nonzero biases)."""
    rng = np.random.default_rng(seed + 17)
    return model.replace(**{k: scale * rng.normal(size=v.shape) for k, v in model.params.items()})


# -- derivatives --------------------------------------------------------------------------------
@settings(max_examples=20, deadline=None)
@given(
    kind=st.sampled_from(["elman", "gru"]),
    D=st.integers(1, 5),
    N=st.integers(0, 3),
    seed=st.integers(0, 2**16),
    batch=BATCH_SHAPES,
    redraw=st.booleans(),
)
def test_derivatives_match_finite_differences(kind, D, N, seed, batch, redraw):
    """J, diag J, J v, Jᵀu, ∂θ and ∂x of Elman and GRU agree with central differences."""
    model = make(kind, D, N, seed)
    if redraw:
        model = redrawn(model, seed, 0.7)
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(*batch, D))
    x = rng.normal(size=(*batch, N)) if N else None
    assert_all_derivatives(model, h, x, seed)


@settings(max_examples=10, deadline=None)
@given(
    kind=st.sampled_from(["elman", "gru"]),
    D=st.integers(1, 8),
    N=st.integers(0, 4),
    seed=st.integers(0, 2**16),
    batch=BATCH_SHAPES,
)
def test_check_derivatives_passes(kind, D, N, seed, batch):
    """The public checker agrees (pitsolve.testing.check_derivatives)."""
    model = redrawn(make(kind, D, N, seed), seed, 0.7)
    assert check_derivatives(model, seed=seed, batch_shape=batch).passed


def test_derivatives_with_broadcast_inputs():
    """Inputs shared across a batch axis: vjp_params sums over the broadcast axes too."""
    model = redrawn(GRU(3, 2, seed=1), 1, 0.5)
    rng = np.random.default_rng(0)
    h, x, u = rng.normal(size=(4, 3)), rng.normal(size=(2,)), rng.normal(size=(4, 3))
    xb = np.broadcast_to(x, (4, 2))
    g, gb = model.vjp_params(h, x, u), model.vjp_params(h, xb, u)
    for k in model.params:
        np.testing.assert_allclose(g[k], gb[k], rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(model.f(h, x), model.f(h, xb), rtol=1e-15)


@pytest.mark.parametrize("cls", [Elman, GRU])
def test_float32_in_float32_out(cls):
    """float32 states compute in float32 even with float64 parameters."""
    model = cls(4, 2, seed=0)
    rng = np.random.default_rng(0)
    h = rng.normal(size=(3, 4)).astype(np.float32)
    x = rng.normal(size=(3, 2)).astype(np.float32)
    assert model.f(h, x).dtype == np.float32
    assert model.jacobian(h, x).dtype == np.float32
    assert model.jvp(h, x, h).dtype == np.float32
    assert model.vjp_h(h, x, h).dtype == np.float32
    assert model.vjp_inputs(h, x, h).dtype == np.float32
    np.testing.assert_allclose(model.f(h, x), model.f(h.astype(float), x.astype(float)), 1e-5)


# -- the compiled sequential loop ---------------------------------------------------------------
def plain_loop(model, h0, inputs, T):
    out = np.empty((*h0.shape[:-1], T, model.state_dim), dtype=h0.dtype)
    h = h0
    for t in range(T):
        h = model.f(h, None if inputs is None else inputs[..., t, :])
        out[..., t, :] = h
    return out


@settings(max_examples=20, deadline=None)
@given(
    kind=st.sampled_from(["elman", "gru"]),
    D=st.integers(1, 19),
    N=st.integers(0, 3),
    T=st.integers(1, 25),
    batch=BATCH_SHAPES,
    dtype=st.sampled_from([np.float64, np.float32]),
    seed=st.integers(0, 2**16),
)
def test_sequential_equals_loop_over_f(kind, D, N, T, batch, dtype, seed):
    """The Numba loop equals stepping f, keeps dtype and batch shape (D straddles 8-blocks)."""
    model = redrawn(make(kind, D, N, seed), seed, 1.0 / np.sqrt(D))
    rng = np.random.default_rng(seed)
    h0 = rng.normal(size=(*batch, D)).astype(dtype)
    inputs = rng.normal(size=(*batch, T, N)).astype(dtype) if N else None
    out = model.sequential(h0, inputs, T)
    assert out.dtype == dtype
    assert out.shape == (*batch, T, D)
    ref = plain_loop(model.astype(dtype), h0, inputs, T)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol)


@pytest.mark.parametrize("cls", [Elman, GRU])
def test_sequential_broadcasts_shared_inputs(cls):
    """One input sequence ``(T, N)`` drives every batch element."""
    model = cls(6, 2, seed=3)
    rng = np.random.default_rng(0)
    h0, X = rng.normal(size=(3, 6)), rng.normal(size=(9, 2))
    out = model.sequential(h0, X, 9)
    assert out.shape == (3, 9, 6)
    np.testing.assert_allclose(out, plain_loop(model, h0, np.broadcast_to(X, (3, 9, 2)), 9), 1e-12)


def test_sequential_uses_first_T_inputs():
    model = Elman(3, 1, seed=0)
    X = np.random.default_rng(0).normal(size=(10, 1))
    np.testing.assert_array_equal(
        model.sequential(np.zeros(3), X, 4), model.sequential(np.zeros(3), X[:4], 4)
    )


def test_sequential_propagates_nan():
    """No fastmath: a NaN in h0 stays NaN (divergence detection relies on it)."""
    for model in (Elman(4, seed=0), GRU(4, seed=0)):
        out = model.sequential(np.array([np.nan, 0.0, 0.0, 0.0]), None, 3)
        assert np.isnan(out).any()


def test_compiled_tanh_accuracy():
    """The loop's tanh is within 2 ulp of NumPy's, keeps ±1 limits, NaN and signed zero."""
    numba = pytest.importorskip("numba")
    from pitsolve.models._rnn_numba import _tanh

    @numba.njit
    def apply(a, out):
        for i in range(a.size):
            out[i] = _tanh(a[i])

    rng = np.random.default_rng(0)
    a = np.concatenate([rng.normal(size=20000) * s for s in (1e-5, 0.2, 0.5, 1.0, 5.0, 40.0)])
    a = np.concatenate([a, [0.0, 0.5, -0.5, np.nextafter(0.5, 0), 1e-310, 800.0, -800.0]])
    out = np.empty_like(a)
    apply(a, out)
    ref = np.tanh(a)
    assert np.all(np.abs(out - ref) <= 2 * np.spacing(np.abs(ref)))
    special = np.array([np.inf, -np.inf, np.nan])
    out = np.empty_like(special)
    apply(special, out)
    assert out[0] == 1.0 and out[1] == -1.0 and np.isnan(out[2])


# -- parameters, initialisation, validation -----------------------------------------------------
def test_parameter_names_and_shapes():
    e = Elman(5, 3, seed=0)
    assert list(e.params) == ["W", "U", "b"]
    assert [e.params[k].shape for k in e.params] == [(5, 5), (5, 3), (5,)]
    assert Elman(5).params["U"].shape == (5, 0)
    g = GRU(4, 2, seed=0)
    assert list(g.params) == GRU_NAMES
    for k, v in g.params.items():
        assert v.shape == {"W": (4, 4), "U": (4, 2), "b": (4,)}[k[0]]
    assert GRU(4).params["Un"].shape == (4, 0)
    assert (e.state_dim, e.input_dim, g.state_dim, g.input_dim) == (5, 3, 4, 2)
    assert Elman.jacobian_structure == GRU.jacobian_structure == "dense"
    assert not Elman.is_affine and not GRU.is_affine


def test_initialisation():
    """Elman: the elman_256 recipe (W ~ N(0, 0.9²/D), U ~ N(0, 1/N), b = 0); GRU: U(±1/√D)."""
    D, N = 64, 8
    rng = np.random.default_rng(0)
    W = rng.normal(0.0, 0.9 / np.sqrt(D), (D, D))
    U = rng.normal(0.0, 1.0 / np.sqrt(N), (D, N))
    e = Elman(D, N, seed=0)
    np.testing.assert_array_equal(e.params["W"], W)
    np.testing.assert_array_equal(e.params["U"], U)
    np.testing.assert_array_equal(e.params["b"], 0.0)
    assert 0.7 < np.max(np.abs(np.linalg.eigvals(Elman(256, seed=1).params["W"]))) < 1.1
    g = GRU(D, N, seed=0)
    for v in g.params.values():
        assert np.all(np.abs(v) <= 1 / np.sqrt(D))
    assert not np.array_equal(GRU(D, seed=0).params["Wz"], GRU(D, seed=1).params["Wz"])
    assert Elman(3, 2, dtype=np.float32).dtype == np.float32


def test_explicit_params():
    rng = np.random.default_rng(0)
    p = {"W": rng.normal(size=(3, 3)), "U": rng.normal(size=(3, 2)), "b": rng.normal(size=3)}
    e = Elman(3, 2, params=p)
    for k in p:
        np.testing.assert_array_equal(e.params[k], p[k])
    assert Elman(3, 2, params=Params(p), dtype=np.float32).dtype == np.float32
    # without dtype= the given arrays' precision is kept
    assert Elman(3, 2, params=Params(p).astype(np.float32)).dtype == np.float32
    assert Elman(3, 2, params=Params(p).astype(np.float32), dtype=np.float64).dtype == np.float64
    gp = {k: rng.normal(size=v.shape) for k, v in GRU(3, 2).params.items()}
    g = GRU(3, 2, params=gp)
    np.testing.assert_array_equal(g.params["Wn"], gp["Wn"])
    with pytest.raises(ValueError, match="exactly the names"):
        Elman(3, 2, params={"W": p["W"], "U": p["U"]})
    with pytest.raises(ValueError, match="shape"):
        Elman(3, 2, params={**p, "W": np.zeros((2, 2))})


def test_replace_changes_the_map():
    e = Elman(3, 1, seed=0)
    h, x = np.ones(3), np.ones(1)
    e2 = e.replace(b=np.full(3, 0.5))
    np.testing.assert_allclose(e2.f(h, x), np.tanh(e.params["W"] @ h + e.params["U"] @ x + 0.5))
    np.testing.assert_allclose(e.f(h, x), np.tanh(e.params["W"] @ h + e.params["U"] @ x))


@pytest.mark.parametrize(
    ("args", "kwargs", "exc"),
    [
        ((0,), {}, ValueError),
        ((2.5,), {}, TypeError),
        ((3, -1), {}, ValueError),
        ((3,), {"dtype": np.int64}, TypeError),
    ],
)
@pytest.mark.parametrize("cls", [Elman, GRU])
def test_invalid_arguments(cls, args, kwargs, exc):
    with pytest.raises(exc):
        cls(*args, **kwargs)


def test_inputs_required_and_refused():
    with pytest.raises(ValueError, match="needs inputs"):
        Elman(3, 2).f(np.zeros(3))
    with pytest.raises(ValueError, match="has no inputs"):
        GRU(3).f(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match="inputs"):
        Elman(3, 2).sequential(np.zeros(3), np.zeros((2, 2)), 5)
