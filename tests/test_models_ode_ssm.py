"""ODEStep (RK4) with Lorenz-63 and a user field, and LinearSSM: derivatives, loops, accuracy."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.integrate import solve_ivp

from pitsolve.models.base import Params
from pitsolve.models.ode import Lorenz63, ODEStep, VectorField
from pitsolve.models.ssm import LinearSSM
from pitsolve.testing import check_derivatives

SQRT_EPS = float(np.sqrt(np.finfo(np.float64).eps))
BATCH_SHAPES = st.sampled_from([(), (1,), (3,), (2, 3)])
SSM_NAMES = ["Wl", "bl", "B", "C1", "c1", "C2", "c2"]


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


def fd_grad(obj, fun, u):
    """∇_θ Σ⟨u, fun(obj with θ)⟩ by central differences, element by element, as a dict."""
    out = {}
    for k, theta in obj.params.items():
        theta = np.asarray(theta)
        g = np.zeros(theta.shape)
        for i in np.ndindex(theta.shape):
            step = SQRT_EPS * max(1.0, abs(float(theta[i])))
            tp, tm = theta.copy(), theta.copy()
            tp[i] += step
            tm[i] -= step
            fp, fm = fun(obj.replace(**{k: tp})), fun(obj.replace(**{k: tm}))
            g[i] = np.sum(u * (fp - fm)) / (2 * step)
        out[k] = g
    return out


def close(a, b, *, rtol=1e-6, scale=None):
    """``a ≈ b`` up to FD accuracy, relative to the size of the compared quantities."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    s = max(1.0, float(np.max(np.abs(b), initial=0.0))) if scale is None else scale
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * s)


def assert_step_derivatives(model, h, x, seed, *, diagonal=False):
    """Every derivative of a model step at ``(h, x)`` against finite differences of ``f``."""
    rng = np.random.default_rng(seed)
    v, u = rng.normal(size=h.shape), rng.normal(size=h.shape)
    J_fd = fd_jacobian(lambda hh: model.f(hh, x), h)
    J = model.jacobian(h, x)
    if diagonal:
        assert J.shape == h.shape
        close(J, np.diagonal(J_fd, 0, -2, -1))
        close(J_fd - J[..., None] * np.eye(h.shape[-1]), 0 * J_fd, scale=1.0)
        J = J[..., None] * np.eye(h.shape[-1])
    else:
        assert J.shape == (*h.shape, h.shape[-1])
        close(J, J_fd)
    close(model.diagonal_jacobian(h, x), np.diagonal(J_fd, 0, -2, -1))
    close(model.jvp(h, x, v), np.einsum("...ij,...j->...i", J_fd, v))
    close(model.vjp_h(h, x, u), np.einsum("...ij,...i->...j", J_fd, u))
    lhs, rhs = np.sum(u * model.jvp(h, x, v)), np.sum(model.vjp_h(h, x, u) * v)
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, np.abs(u).sum() * np.abs(v).sum() * np.abs(J).max())
    f1, J1 = model.f_and_jacobian(h, x)
    np.testing.assert_allclose(f1, model.f(h, x), rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(J1, model.jacobian(h, x), rtol=1e-14, atol=1e-15)
    grads = model.vjp_params(h, x, u)
    assert isinstance(grads, Params) and list(grads) == list(model.params)
    for k, g in fd_grad(model, lambda m: m.f(h, x), u).items():
        assert grads[k].shape == model.params[k].shape, k
        close(grads[k], g, scale=max(1.0, float(np.abs(g).max(initial=0.0))))
    if model.input_dim:
        Jx = fd_jacobian(lambda xx: model.f(h, xx), x)
        close(model.vjp_inputs(h, x, u), np.einsum("...ij,...i->...j", Jx, u))


def plain_loop(model, h0, inputs, T):
    out = np.empty((*h0.shape[:-1], T, model.state_dim), dtype=h0.dtype)
    h = h0
    for t in range(T):
        h = model.f(h, None if inputs is None else inputs[..., t, :])
        out[..., t, :] = h
    return out


class TanhField(VectorField):
    r"""A user field :math:`g(h) = \tanh(A h) + c` with only ``g``, ``jacobian``, ``vjp_params``
    (so ODEStep must use the default JVP/VJP and the Python loop)."""

    def __init__(self, D, seed=0):
        rng = np.random.default_rng(seed)
        super().__init__(Params(A=rng.normal(size=(D, D)), c=rng.normal(size=D)), state_dim=D)

    def g(self, h):
        return np.tanh(h @ self.params["A"].T) + self.params["c"]

    def jacobian(self, h):
        s = 1 - np.tanh(h @ self.params["A"].T) ** 2
        return s[..., :, None] * self.params["A"]

    def vjp_params(self, h, u):
        gs = (u * (1 - np.tanh(h @ self.params["A"].T) ** 2)).reshape(-1, h.shape[-1])
        return Params(A=gs.T @ h.reshape(-1, h.shape[-1]), c=u.reshape(-1, h.shape[-1]).sum(0))


def lorenz_points(rng, batch):
    """Points of attractor size: |x|, |y| ≲ 20, z ∈ (0, 45)."""
    return rng.normal(size=(*batch, 3)) * [8.0, 9.0, 8.0] + [0.0, 0.0, 24.0]


# -- ODEStep ------------------------------------------------------------------------------------
@settings(max_examples=12, deadline=None)
@given(dt=st.sampled_from([0.001, 0.01, 0.05]), seed=st.integers(0, 2**16), batch=BATCH_SHAPES)
def test_lorenz_step_derivatives(dt, seed, batch):
    """RK4 step of Lorenz-63: J (chain rule), JVP, VJPs in h and (σ, ρ, β) vs central FD."""
    rng = np.random.default_rng(seed)
    field = Lorenz63(*rng.uniform([5, 15, 1], [15, 35, 4]))
    assert_step_derivatives(ODEStep(field, dt=dt), lorenz_points(rng, batch), None, seed)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), batch=BATCH_SHAPES)
def test_lorenz_field_derivatives(seed, batch):
    """The field's own g, G, Gv, Gᵀu, ∂θ against central differences."""
    rng = np.random.default_rng(seed)
    field = Lorenz63(*rng.uniform([5, 15, 1], [15, 35, 4]))
    h = lorenz_points(rng, batch)
    v, u = rng.normal(size=h.shape), rng.normal(size=h.shape)
    x, y, z = h[..., 0], h[..., 1], h[..., 2]
    s, r, b = (float(field.params[k]) for k in ("sigma", "rho", "beta"))
    np.testing.assert_allclose(
        field.g(h), np.stack([s * (y - x), x * (r - z) - y, x * y - b * z], -1), 1e-14
    )
    G = fd_jacobian(field.g, h)
    close(field.jacobian(h), G)
    close(field.jvp(h, v), np.einsum("...ij,...j->...i", G, v))
    close(field.vjp_h(h, u), np.einsum("...ij,...i->...j", G, u))
    grads = field.vjp_params(h, u)
    assert list(grads) == ["sigma", "rho", "beta"]
    for k, g in fd_grad(field, lambda f: f.g(h), u).items():
        assert grads[k].shape == ()
        close(grads[k], g, scale=max(1.0, abs(float(g))))


@settings(max_examples=8, deadline=None)
@given(
    D=st.integers(1, 5),
    dt=st.sampled_from([0.01, 0.1]),
    seed=st.integers(0, 2**16),
    batch=BATCH_SHAPES,
)
def test_user_field_step_derivatives(D, dt, seed, batch):
    """A user field with only g / jacobian / vjp_params: the default JVP/VJP paths."""
    model = ODEStep(TanhField(D, seed), dt=dt)
    h = np.random.default_rng(seed).normal(size=(*batch, D))
    assert_step_derivatives(model, h, None, seed)


@pytest.mark.parametrize("dt", [0.01, 0.05])
def test_lorenz_check_derivatives(dt):
    """The public checker, at attractor-sized points."""
    h = lorenz_points(np.random.default_rng(0), (5,))
    assert check_derivatives(ODEStep(Lorenz63(), dt=dt), h).passed


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch", [(), (1,), (3,), (2, 2)])
def test_lorenz_sequential_equals_loop_over_f(dtype, batch):
    """The compiled RK4 loop equals stepping f, in the dtype of h0 and with its batch shape."""
    model = ODEStep(Lorenz63(), dt=0.01)
    h0 = lorenz_points(np.random.default_rng(1), batch).astype(dtype)
    T = 60
    out = model.sequential(h0, None, T)
    assert out.dtype == dtype and out.shape == (*batch, T, 3)
    ref = plain_loop(model, h0, None, T)
    assert ref.dtype == dtype
    tol = 1e-11 if dtype == np.float64 else 1e-4  # chaotic: round-off grows over the horizon
    np.testing.assert_allclose(out, ref, rtol=tol, atol=tol * 20)


def test_user_field_sequential_is_the_python_loop():
    model = ODEStep(TanhField(4, 2), dt=0.05)
    h0 = np.random.default_rng(0).normal(size=(2, 4))
    np.testing.assert_array_equal(model.sequential(h0, None, 7), plain_loop(model, h0, None, 7))


def test_lorenz_rk4_fourth_order_against_solve_ivp():
    """RK4 trajectories converge to a tight solve_ivp reference at rate dt⁴ over t ∈ [0, 1]."""
    field = Lorenz63()
    h0 = np.array([1.0, 1.0, 20.0])
    errors = []
    for dt in (0.01, 0.005, 0.0025):
        n = round(1.0 / dt)
        t = dt * np.arange(1, n + 1)
        ref = solve_ivp(
            lambda _, y: field.g(y),
            (0.0, 1.0),
            h0,
            method="DOP853",
            t_eval=t,
            rtol=1e-10,
            atol=1e-12,
        ).y.T
        err = np.abs(ODEStep(field, dt=dt).sequential(h0, None, n) - ref).max()
        assert err <= 4e4 * dt**4, (dt, err)
        errors.append(err)
    ratios = np.array(errors[:-1]) / np.array(errors[1:])
    assert np.all((ratios > 12) & (ratios < 22)), ratios  # 2⁴ = 16


def test_odestep_parameters_are_the_fields():
    field = Lorenz63(10.0, 28.0, 8.0 / 3.0)
    model = ODEStep(field, dt=0.01)
    assert list(model.params) == ["sigma", "rho", "beta"]
    assert all(model.params[k].shape == () for k in model.params)
    assert model.field is field
    assert (model.state_dim, model.input_dim, model.jacobian_structure) == (3, 0, "dense")
    h = np.array([1.0, 2.0, 3.0])
    other = model.replace(rho=np.asarray(20.0))
    assert float(other.field.params["rho"]) == 20.0
    np.testing.assert_allclose(other.f(h), ODEStep(Lorenz63(rho=20.0), dt=0.01).f(h), 1e-15)
    np.testing.assert_allclose(other.sequential(h, None, 5)[-1], plain_loop(other, h, None, 5)[-1])
    assert float(model.params["rho"]) == 28.0
    assert ODEStep(Lorenz63(), dt=0.01).astype(np.float32).f(h.astype(np.float32)).dtype == (
        np.float32
    )


def test_odestep_validation():
    with pytest.raises(ValueError, match="dt"):
        ODEStep(Lorenz63(), dt=0.0)
    with pytest.raises(ValueError, match="dt"):
        ODEStep(Lorenz63(), dt=np.nan)
    with pytest.raises(TypeError, match="VectorField"):
        ODEStep(lambda h: h, dt=0.1)
    with pytest.raises(ValueError, match="state_dim"):
        ODEStep(Lorenz63(), dt=0.1, state_dim=4)
    with pytest.raises(ValueError, match="autonomous"):
        ODEStep(Lorenz63(), dt=0.1).f(np.zeros(3), np.zeros(2))


# -- LinearSSM ----------------------------------------------------------------------------------
def random_ssm(D, N, H, seed, scale=0.7):
    m = LinearSSM(D, N, readout_hidden=H, seed=seed)
    rng = np.random.default_rng(seed + 5)
    return m.replace(**{k: scale * rng.normal(size=v.shape) for k, v in m.params.items()})


@settings(max_examples=15, deadline=None)
@given(
    D=st.integers(1, 5),
    N=st.integers(1, 3),
    H=st.integers(1, 6),
    seed=st.integers(0, 2**16),
    batch=BATCH_SHAPES,
)
def test_ssm_derivatives(D, N, H, seed, batch):
    """Diagonal J = λ(x), JVP/VJP, ∂θ (zero for the readout) and ∂x vs central differences."""
    model = random_ssm(D, N, H, seed)
    rng = np.random.default_rng(seed)
    h, x = rng.normal(size=(*batch, D)), rng.normal(size=(*batch, N))
    assert_step_derivatives(model, h, x, seed, diagonal=True)
    grads = model.vjp_params(h, x, rng.normal(size=h.shape))
    for k in ("C1", "c1", "C2", "c2"):
        assert np.all(grads[k] == 0)


@settings(max_examples=15, deadline=None)
@given(
    D=st.integers(1, 5),
    H=st.integers(1, 6),
    out=st.integers(1, 3),
    seed=st.integers(0, 2**16),
    batch=BATCH_SHAPES,
)
def test_ssm_readout_derivatives(D, H, out, seed, batch):
    """y = C2 relu(C1 h + c1) + c2: VJPs in h and in (C1, c1, C2, c2) vs central differences."""
    model = LinearSSM(D, 2, readout_hidden=H, outputs=out, seed=seed)
    model = model.replace(c1=np.random.default_rng(seed).normal(size=H) * 0.3)
    rng = np.random.default_rng(seed)
    h, u = rng.normal(size=(*batch, D)), rng.normal(size=(*batch, out))
    y = model.readout(h)
    p = model.params
    ref = np.maximum(h @ p["C1"].T + p["c1"], 0) @ p["C2"].T + p["c2"]
    np.testing.assert_allclose(y, ref, rtol=1e-14, atol=1e-15)
    Jy = fd_jacobian(model.readout, h)
    close(model.readout_vjp_h(h, u), np.einsum("...ij,...i->...j", Jy, u))
    grads = model.readout_vjp_params(h, u)
    assert list(grads) == SSM_NAMES
    for k, g in fd_grad(model, lambda m: m.readout(h), u).items():
        close(grads[k], g, scale=max(1.0, float(np.abs(g).max(initial=0.0))))
    for k in ("Wl", "bl", "B"):
        assert np.all(grads[k] == 0)


def test_ssm_check_derivatives():
    for batch in [(), (4,), (2, 3)]:
        assert check_derivatives(random_ssm(4, 3, 5, 0), batch_shape=batch).passed


def test_ssm_is_affine_with_h_independent_jacobian():
    model = LinearSSM(4, 2, seed=0)
    assert LinearSSM.is_affine and LinearSSM.jacobian_structure == "diagonal"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 2))
    J1, J2 = model.jacobian(rng.normal(size=(5, 4)), x), model.jacobian(rng.normal(size=(5, 4)), x)
    np.testing.assert_array_equal(J1, J2)
    assert np.all((J1 > 0) & (J1 < 1))
    # h with more batch axes than x: J is broadcast to h's axes
    assert model.jacobian(rng.normal(size=(3, 5, 4)), x).shape == (3, 5, 4)


@settings(max_examples=15, deadline=None)
@given(
    D=st.integers(1, 9),
    N=st.integers(1, 3),
    T=st.integers(1, 30),
    batch=BATCH_SHAPES,
    dtype=st.sampled_from([np.float64, np.float32]),
    seed=st.integers(0, 2**16),
)
def test_ssm_sequential_equals_loop_over_f(D, N, T, batch, dtype, seed):
    model = random_ssm(D, N, 3, seed, scale=1.0)
    rng = np.random.default_rng(seed)
    h0 = rng.normal(size=(*batch, D)).astype(dtype)
    X = rng.normal(size=(*batch, T, N)).astype(dtype)
    out = model.sequential(h0, X, T)
    assert out.dtype == dtype and out.shape == (*batch, T, D)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(out, plain_loop(model, h0, X, T), rtol=tol, atol=tol)


def test_ssm_parameters_and_initialisation():
    m = LinearSSM(6, 3, readout_hidden=5, outputs=2, seed=0)
    assert list(m.params) == SSM_NAMES
    shapes = [m.params[k].shape for k in SSM_NAMES]
    assert shapes == [(6, 3), (6,), (6, 3), (5, 6), (5,), (2, 5), (2,)]
    lam0 = 1 / (1 + np.exp(-m.params["bl"]))
    assert np.all((lam0 > 0.8) & (lam0 < 0.99))
    assert LinearSSM(6, 3).output_dim == 3
    given_ = {k: np.ones(v.shape) for k, v in m.params.items()}
    m2 = LinearSSM(6, 3, readout_hidden=5, outputs=2, params=given_, dtype=np.float32)
    assert m2.dtype == np.float32 and np.all(m2.params["C2"] == 1)
    with pytest.raises(ValueError):
        LinearSSM(6, 0)
    with pytest.raises(ValueError, match="shape"):
        LinearSSM(6, 3, params={**given_, "B": np.ones((3, 3))})
    with pytest.raises(ValueError, match="needs inputs"):
        m.f(np.zeros(6))
