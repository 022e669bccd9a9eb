"""The PLRNN family: hand-derived derivatives, kink conventions, the compiled loop, parameters."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pitsolve.models.base import Params
from pitsolve.models.plrnn import ALRNN, ClippedShPLRNN, ShPLRNN
from pitsolve.testing import check_derivatives
from pitsolve.testing import problems as bp

BATCH_SHAPES = st.sampled_from([(), (1,), (3,), (2, 3)])


def make(kind: str, M: int, L: int, seed: int):
    """A model of the family; ``L`` is the hidden width (ALRNN: P = L mod (M + 1))."""
    if kind == "shplrnn":
        return ShPLRNN(M, L, seed=seed)
    if kind == "clipped":
        return ClippedShPLRNN(M, L, seed=seed)
    return ALRNN(M, L % (M + 1), seed=seed)


def randomized(model, seed: int):
    """The model with all parameters redrawn at unit scale (nonzero biases, |a| ≈ 1)."""
    rng = np.random.default_rng(seed + 1000)
    return model.replace(**{k: rng.normal(0.0, 1.0, v.shape) for k, v in model.params.items()})


# -- derivatives ----------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(
    kind=st.sampled_from(["shplrnn", "clipped", "alrnn"]),
    M=st.integers(1, 6),
    L=st.integers(1, 40),
    seed=st.integers(0, 2**16),
    batch=BATCH_SHAPES,
    redraw=st.booleans(),
    kernels=st.booleans(),
)
def test_check_derivatives_passes(kind, M, L, seed, batch, redraw, kernels):
    """Every derivative agrees with central finite differences at random points."""
    model = make(kind, M, L, seed)
    if redraw:
        model = randomized(model, seed)
    model = model.on("numba" if kernels else "numpy")
    report = check_derivatives(model, seed=seed, batch_shape=batch)
    assert report.passed


@pytest.mark.parametrize("name", ["shplrnn_3x50", "chaotic_clipped_3x50"])
def test_check_derivatives_benchmark_models(name):
    """The benchmark models, at points on their own trajectory."""
    model, h0, _ = getattr(bp, name)(T=10)
    h = model.sequential(h0, None, 200)[::20]
    assert check_derivatives(model, h).passed


def test_float32_model_is_checked_in_float64():
    model = ShPLRNN(4, 16, seed=1, dtype=np.float32)
    assert model.dtype == np.float32
    assert check_derivatives(model).passed


def _without_kernels(model):
    return model.on("numpy")


@pytest.mark.parametrize("cls", [ShPLRNN, ClippedShPLRNN])
# (20, 9): M > 16, dense J from one BLAS product; (2, 9000): M·L > 2¹⁴, vjp_params by BLAS
@pytest.mark.parametrize(("M", "L"), [(1, 1), (3, 50), (5, 13), (20, 9), (2, 9000)])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_compiled_and_array_paths_agree(cls, M, L, dtype):
    """The Numba kernels (NumPy arrays) and the array-namespace code (CuPy's path) agree."""
    model = randomized(cls(M, L, seed=M), M).astype(dtype)
    plain = _without_kernels(model)
    rng = np.random.default_rng(0)
    h, v = (rng.normal(size=(4, 3, M)).astype(dtype) for _ in range(2))
    tol = {np.float64: 1e-12, np.float32: 2e-5}[dtype]

    def same(a, b):
        assert a.dtype == b.dtype == dtype and a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1.0, np.abs(b).max()))

    for name in ("f", "jacobian", "diagonal_jacobian"):
        same(getattr(model, name)(h), getattr(plain, name)(h))
    for name in ("f_and_jacobian", "f_and_diagonal_jacobian"):
        for a, b in zip(getattr(model, name)(h), getattr(plain, name)(h), strict=True):
            same(a, b)
    same(model.jvp(h, None, v), plain.jvp(h, None, v))
    same(model.vjp_h(h, None, v), plain.vjp_h(h, None, v))
    for a, b in zip(
        model.vjp_params(h, None, v).values(), plain.vjp_params(h, None, v).values(), strict=True
    ):
        same(a, b)
    # broadcasting and mixed precision take the array path and still work
    same(model.jvp(h, None, v[0]), plain.jvp(h, None, v[0]))
    assert model.f(h.astype(np.float64)).dtype == np.float64


# -- kinks ----------------------------------------------------------------------------------
def _dyadic(rng, shape):
    """Random multiples of 1/8 in [-2, 2]: their products and short sums are exact."""
    return np.round(rng.uniform(-2, 2, shape) * 8) / 8


def _agree_everywhere(model, z):
    """J v == jvp, Jᵀu == vjp_h, diag J == diagonal_jacobian, fused == unfused, at z.

    Also holds with the kernels switched off, and both paths give the same Jacobian.
    """
    if model.backend is None or model.backend.compiled:
        J_plain = _agree_everywhere(_without_kernels(model), z)
        np.testing.assert_allclose(model.jacobian(z), J_plain, rtol=1e-12, atol=1e-14)
    rng = np.random.default_rng(0)
    v, u = rng.normal(size=z.shape), rng.normal(size=z.shape)
    J = model.jacobian(z)
    np.testing.assert_allclose(
        np.einsum("...ij,...j->...i", J, v), model.jvp(z, None, v), 1e-12, 1e-14
    )
    np.testing.assert_allclose(
        np.einsum("...ij,...i->...j", J, u), model.vjp_h(z, None, u), 1e-12, 1e-14
    )
    np.testing.assert_allclose(np.diagonal(J, 0, -2, -1), model.diagonal_jacobian(z), 1e-12, 1e-14)
    f, Jf = model.f_and_jacobian(z)
    np.testing.assert_array_equal(Jf, J)
    np.testing.assert_array_equal(f, model.f(z))
    f2, d2 = model.f_and_diagonal_jacobian(z)
    np.testing.assert_array_equal(f2, f)
    np.testing.assert_array_equal(d2, model.diagonal_jacobian(z))
    return J


@settings(max_examples=15, deadline=None)
@given(M=st.integers(2, 5), L=st.integers(2, 20), seed=st.integers(0, 2**16))
def test_shplrnn_kink_convention(M, L, seed):
    """On W2 z + h2 = 0 exactly, relu'(0) = 0 in every derivative alike."""
    rng = np.random.default_rng(seed)
    z = _dyadic(rng, (3, M))
    W2 = _dyadic(rng, (L, M))
    h2 = rng.uniform(-1, 1, L)
    h2[0] = -(W2[0] @ z[0])  # exact: dyadic products and sums
    h2[1] = -(W2[1] @ z[1])
    model = ShPLRNN(M, L, seed=seed).replace(W2=W2, h2=h2)
    pre = z @ W2.T + h2
    assert pre[0, 0] == 0.0 and pre[1, 1] == 0.0
    J = _agree_everywhere(model, z)
    # relu'(0) = 0: the Jacobian equals the one with the kink units strictly off
    off = model.replace(h2=h2 - 1e-9 * (np.arange(L) < 2))
    np.testing.assert_allclose(J, off.jacobian(z), rtol=1e-12, atol=1e-14)
    # and vjp_params sees the same masks: no gradient reaches h2 or W2 through a unit at 0
    u = np.zeros_like(z)
    u[0] = rng.normal(size=M)
    g = model.vjp_params(z, None, u)
    assert g["h2"][0] == 0.0 and np.all(g["W2"][0] == 0.0)


@settings(max_examples=15, deadline=None)
@given(M=st.integers(2, 5), L=st.integers(2, 20), seed=st.integers(0, 2**16))
def test_clipped_kink_convention(M, L, seed):
    """On both kinks of the clipped unit (W2 z + h2 = 0 and W2 z = 0) the derivatives agree."""
    rng = np.random.default_rng(seed)
    z = _dyadic(rng, (2, M))
    W2 = _dyadic(rng, (L, M))
    W2[0, :2] = [z[0, 1], -z[0, 0]]  # W2[0] z[0] = 0 exactly
    W2[0, 2:] = 0.0
    h2 = rng.uniform(-1, 1, L)
    h2[1] = -(W2[1] @ z[1])
    model = ClippedShPLRNN(M, L, seed=seed).replace(W2=W2, h2=h2)
    assert (z @ W2.T)[0, 0] == 0.0 and (z @ W2.T + h2)[1, 1] == 0.0
    J = _agree_everywhere(model, z)
    # the indicator form of MATH.md: m = 1[W2 z + h2 > 0] − 1[W2 z > 0]
    m = (z @ W2.T + h2 > 0).astype(float) - (z @ W2.T > 0)
    ref = np.stack([np.diag(model.params["a"]) + model.params["W1"] * mi @ W2 for mi in m])
    np.testing.assert_allclose(J, ref, rtol=1e-12, atol=1e-14)


@settings(max_examples=15, deadline=None)
@given(M=st.integers(1, 6), seed=st.integers(0, 2**16), data=st.data())
def test_alrnn_kink_convention(M, seed, data):
    """A relu unit exactly at 0 has derivative 0 in every derivative alike."""
    P = data.draw(st.integers(1, M))
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(3, M))
    z[:, M - P] = 0.0
    model = randomized(ALRNN(M, P, seed=seed), seed)
    J = _agree_everywhere(model, z)
    W, a = model.params["W"], model.params["a"]
    col = J[:, :, M - P] - np.diag(a)[:, M - P]
    np.testing.assert_array_equal(col, 0.0)
    linear = W[:, : M - P] + np.diag(a)[:, : M - P]
    np.testing.assert_array_equal(J[:, :, : M - P], np.broadcast_to(linear, (3, M, M - P)))


# -- the compiled loop ----------------------------------------------------------------------
def _plain_loop(model, h0, T):
    out = []
    h = h0
    for _ in range(T):
        h = model.f(h)
        out.append(h)
    return np.stack(out, axis=-2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("batch", [(), (2,), (2, 3)])
@pytest.mark.parametrize(
    "model",
    [
        ShPLRNN(3, 50, seed=0),
        ClippedShPLRNN(4, 13, seed=1),
        ALRNN(5, 2, seed=2),
        ALRNN(3, 0, seed=3),
        ALRNN(3, 3, seed=4),
        bp.chaotic_clipped_3x50(T=1)[0],
    ],
    ids=repr,
)
def test_sequential_matches_loop_of_f(model, dtype, batch):
    """The Numba loop == stepping f in a Python loop; dtype and batch axes are preserved."""
    model = randomized(model, 7) if isinstance(model, ALRNN) else model
    if isinstance(model, ALRNN):  # keep it bounded: scale W, |a| < 1
        model = model.replace(a=0.5 * np.tanh(model.params["a"]), W=0.3 * model.params["W"])
    model = model.astype(dtype)
    h0 = np.random.default_rng(5).normal(size=(*batch, model.state_dim)).astype(dtype)
    T = 25 if dtype == np.float64 else 12  # round-off grows like e^(0.22 t) on the chaotic one
    got = model.sequential(h0, None, T)
    assert got.dtype == dtype
    assert got.shape == (*batch, T, model.state_dim)
    ref = _plain_loop(model, h0, T)
    assert ref.dtype == dtype
    tol = {np.float64: 1e-11, np.float32: 1e-4}[dtype]
    scale = max(1.0, float(np.abs(ref).max()))
    np.testing.assert_allclose(got, ref, rtol=tol, atol=tol * scale)


def test_sequential_casts_to_h0_dtype_and_edge_lengths():
    model = ShPLRNN(3, 8, seed=0)  # float64 parameters
    h0 = np.ones(3, dtype=np.float32)
    out = model.sequential(h0, None, 4)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, _plain_loop(model, h0.astype(np.float64), 4), rtol=1e-5)
    assert model.sequential(h0, None, 1).shape == (1, 3)
    assert model.sequential(np.ones((2, 3)), None, 0).shape == (2, 0, 3)
    with pytest.raises(ValueError, match="h0"):
        model.sequential(np.ones(4), None, 3)


# -- parameters and initialisation ----------------------------------------------------------
@pytest.mark.parametrize("kind", ["shplrnn", "clipped", "alrnn"])
def test_params_round_trips(kind):
    model = make(kind, 4, 9, seed=3)
    p = model.params
    names = ["a", "W", "h"] if kind == "alrnn" else ["a", "W1", "W2", "h1", "h2"]
    assert list(p) == names
    flat = p.flatten()
    assert flat.shape == (p.size,)
    back = p.unflatten(flat)
    for k in p:
        np.testing.assert_array_equal(back[k], p[k])
    # replace makes a new model, recomputes cached quantities, leaves the old one alone
    z = np.random.default_rng(0).normal(size=(5, 4))
    J_old = model.jacobian(z)
    new_p = p.unflatten(flat * 1.5)
    new = model.replace(new_p)
    np.testing.assert_array_equal(model.jacobian(z), J_old)
    if kind == "alrnn":
        fresh = ALRNN.from_params(new_p, relu_units=model.relu_units)
    else:
        fresh = type(model).from_params(new_p)
    np.testing.assert_array_equal(new.jacobian(z), fresh.jacobian(z))
    np.testing.assert_array_equal(new.diagonal_jacobian(z), fresh.diagonal_jacobian(z))
    np.testing.assert_array_equal(new.sequential(z, None, 3), fresh.sequential(z, None, 3))
    assert not np.allclose(new.jacobian(z), J_old)
    one = model.replace(a=np.zeros(4))
    np.testing.assert_array_equal(one.params["a"], 0.0)
    np.testing.assert_allclose(
        model.diagonal_jacobian(z) - one.diagonal_jacobian(z), np.broadcast_to(p["a"], z.shape)
    )


@pytest.mark.parametrize("kind", ["shplrnn", "clipped", "alrnn"])
def test_seeded_init_is_deterministic(kind):
    a, b, c = make(kind, 5, 11, seed=42), make(kind, 5, 11, seed=42), make(kind, 5, 11, seed=43)
    for k in a.params:
        np.testing.assert_array_equal(a.params[k], b.params[k])
    assert not np.array_equal(a.params.flatten(), c.params.flatten())
    g = make(kind, 5, 11, seed=np.random.default_rng(42))
    np.testing.assert_array_equal(g.params.flatten(), a.params.flatten())


def test_init_follows_math_md():
    """a = diag(K)/λ_max(K) ∈ (0, 1]; W1, W2 within their uniform bounds; biases as stated."""
    M, L = 6, 30
    m, c, r = ShPLRNN(M, L, seed=0), ClippedShPLRNN(M, L, seed=0), ALRNN(M, 2, seed=0)
    rng = np.random.default_rng(0)
    R = rng.normal(size=(M, M))
    K = R.T @ R / M + np.eye(M)
    np.testing.assert_allclose(m.params["a"], np.diag(K) / np.linalg.eigvalsh(K)[-1], rtol=1e-14)
    for model in (m, c, r):
        assert np.all((model.params["a"] > 0) & (model.params["a"] <= 1))
    for model in (m, c):
        assert np.abs(model.params["W1"]).max() <= 1 / np.sqrt(L)
        assert np.abs(model.params["W2"]).max() <= 1 / np.sqrt(M)
        np.testing.assert_array_equal(model.params["h1"], 0.0)
    np.testing.assert_array_equal(m.params["h2"], 0.0)
    assert 0 < np.abs(c.params["h2"]).max() <= 1 / np.sqrt(L)
    np.testing.assert_array_equal(np.diag(r.params["W"]), 0.0)
    np.testing.assert_array_equal(r.params["h"], 0.0)
    assert ShPLRNN(3, 4, dtype=np.float32).params.dtype == np.float32


def test_constructor_errors():
    with pytest.raises(ValueError, match="latent"):
        ShPLRNN(0, 3)
    with pytest.raises(TypeError, match="hidden"):
        ClippedShPLRNN(3, 2.5)
    with pytest.raises(ValueError, match="relu_units"):
        ALRNN(3, 4)
    with pytest.raises(ValueError, match="W1"):
        ShPLRNN.from_params(dict(ShPLRNN(3, 4).params) | {"W1": np.ones((3, 5))})
    with pytest.raises(ValueError, match="names"):
        ShPLRNN.from_params({"a": np.ones(3), "W2": np.ones((4, 3))})
    with pytest.raises(TypeError, match="float"):
        ALRNN.from_params({"a": np.ones(2, int), "W": np.ones((2, 2)), "h": np.ones(2)}, 1)


def test_from_params_keeps_arrays_and_dtype():
    p = Params(a=np.full(2, 0.5), W=np.eye(2)[::-1].copy(), h=np.ones(2)).astype(np.float32)
    model = ALRNN.from_params(p, relu_units=1)
    assert model.dtype == np.float32
    z = np.array([1.0, -2.0], dtype=np.float32)
    # f = a z + W Φ(z) + h with Φ(z) = (1, relu(-2)) = (1, 0)
    np.testing.assert_allclose(model.f(z), [0.5 + 0 + 1, -1.0 + 1 + 1])
    assert "ALRNN(latent=2, relu_units=1" in repr(model)


def test_vjp_params_sums_over_leading_axes():
    model = randomized(ClippedShPLRNN(3, 7, seed=0), 0)
    rng = np.random.default_rng(1)
    h, u = rng.normal(size=(2, 4, 3)), rng.normal(size=(2, 4, 3))
    total = model.vjp_params(h, None, u)
    parts = [model.vjp_params(h[i, j], None, u[i, j]) for i in range(2) for j in range(4)]
    for k in total:
        np.testing.assert_allclose(total[k], sum(p[k] for p in parts), rtol=1e-12, atol=1e-13)


# -- benchmark problems ---------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_plrnn_benchmark_problems_build(dtype):
    for fn, cls in ((bp.shplrnn_3x50, ShPLRNN), (bp.chaotic_clipped_3x50, ClippedShPLRNN)):
        prob = fn(T=123, dtype=dtype)
        model, h0, inputs = prob
        assert type(model) is cls and model.state_dim == 3 and model.hidden_dim == 50
        assert model.dtype == dtype and h0.dtype == dtype and h0.shape == (3,)
        assert inputs is None and prob.T == 123
        assert prob.problem().T == 123
    rng = np.random.default_rng(0)
    a = rng.uniform(0.5, 0.9, 3)
    W1 = rng.normal(0, 0.3 / np.sqrt(50), (3, 50))
    m64 = bp.shplrnn_3x50()[0]
    np.testing.assert_array_equal(m64.params["a"], a)
    np.testing.assert_array_equal(m64.params["W1"], W1)


def test_plrnn_benchmark_characters():
    """Contracting: ‖J_t‖₂ ≈ 0.8 and no decay to 0; chaotic: bounded, |z| ≲ 40, not settling."""
    model, h0, _ = bp.shplrnn_3x50()
    z = model.sequential(h0, None, 2000)
    norms = np.linalg.norm(model.jacobian(z[-100:]), 2, axis=(-2, -1))
    np.testing.assert_allclose(norms, 0.8, atol=0.01)
    assert np.abs(z[-1]).max() > 0.5  # a non-trivial fixed point, far from subnormal numbers
    model, h0, _ = bp.chaotic_clipped_3x50()
    z = model.sequential(h0, None, 5000)
    assert np.all(np.isfinite(z)) and np.abs(z).max() < 40
    assert z[-1000:].std(axis=0).min() > 0.1


@pytest.mark.parametrize("name", ["gru_64", "elman_256"])
def test_driven_benchmark_problems_build(name):
    import pitsolve.models

    cls = {"gru_64": "GRU", "elman_256": "Elman"}[name]
    if not hasattr(pitsolve.models, cls):
        pytest.skip(f"pitsolve.models.{cls} not available yet")
    D = {"gru_64": 64, "elman_256": 256}[name]
    model, h0, inputs = getattr(bp, name)(T=50)
    assert model.state_dim == D and model.input_dim == 8
    assert h0.shape == (D,) and not h0.any()
    np.testing.assert_array_equal(inputs, np.random.default_rng(1).normal(0, 1, (50, 8)))
    if name == "elman_256":
        rng = np.random.default_rng(0)
        np.testing.assert_array_equal(model.params["W"], rng.normal(0, 0.9 / 16, (256, 256)))
        np.testing.assert_array_equal(model.params["U"], rng.normal(0, np.sqrt(1 / 8), (256, 8)))
        np.testing.assert_array_equal(model.params["b"], 0.0)


@pytest.mark.parametrize("cls", [ShPLRNN, ClippedShPLRNN])
@pytest.mark.parametrize("forced", [False, True])
def test_jacobians_from_patterns_are_the_plain_sums(cls, forced):
    """The compiled kernel sums J_t = diag(a) + Σ_j m_j P_j only where the activation
    pattern changes (and over the rows, as the units go, where it changes at most rows).
    Every path gives the plain sum over j in order, bit for bit: rows that repeat (one
    pattern for many steps), rows that all differ, and the switch between the two, with
    more hidden units than one 64-bit word holds."""
    rng = np.random.default_rng(3)
    model = cls(3, 70, seed=1)
    steady = np.repeat(rng.normal(size=(4, 3)), 700, axis=0)  # 4 patterns, 700 rows each
    H = np.concatenate([steady[:1500], rng.normal(size=(1500, 3)), steady[1500:]])
    zhat, a = (rng.normal(size=H.shape), rng.uniform(0, 1, H.shape)) if forced else (None, None)
    z = H if zhat is None else (1 - a) * H + a * zhat
    p = model.params
    m = ((z @ p["W2"].T + p["h2"]) > 0).astype(float)
    if cls is ClippedShPLRNN:
        m -= (z @ p["W2"].T > 0).astype(float)
    P, C = model._P(), model._C()
    J = np.zeros((len(H), 9))
    D = np.zeros((len(H), 3))
    for j in range(model.hidden_dim):  # in order of j, as the kernel
        J += P[j] * m[:, j : j + 1]
        D += C[j] * m[:, j : j + 1]
    J[:, ::4] += p["a"]
    D += p["a"]
    J = J.reshape(-1, 3, 3)
    if forced:
        J *= (1 - a)[:, None, :]
        D *= 1 - a
        got_J = model._forced_eval(H, zhat, a, jac="dense")[1]
        got_D = model._forced_eval(H, zhat, a, jac="diag")[1]
    else:
        got_J, got_D = model.jacobian(H), model.diagonal_jacobian(H)
    np.testing.assert_array_equal(got_J, J)
    np.testing.assert_array_equal(got_D, D)
