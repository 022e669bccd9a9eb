"""Optimisers on Params: Adam and RAdam against plain-NumPy re-implementations, schedules,
clipping, non-finite gradients, state round trips and the SciPy adapter."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.optimize

from pitsolve.models.base import Params
from pitsolve.training.optim import (
    Adam,
    Constant,
    ExponentialDecay,
    OptimizerState,
    RAdam,
    ScipyObjective,
    as_schedule,
    clip_by_global_norm,
    global_norm,
)

SHAPES = {"W": (3, 4), "b": (5,)}


def make_params(seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    return Params({k: rng.standard_normal(s).astype(dtype) for k, s in SHAPES.items()})


TARGET = np.random.default_rng(42).standard_normal(17)


def grad_flat(theta):
    """A parameter-dependent gradient (of sum((θ - c)^4)/4 + sum(θ^2)/2), on a flat vector."""
    return (theta - TARGET) ** 3 + theta


def grad_params(params):
    return params.unflatten(grad_flat(params.flatten()))


# -- independent references on a flat vector ----------------------------------------------
def reference_run(
    kind,
    theta,
    steps,
    *,
    lr,
    b1=0.9,
    b2=0.999,
    eps=1e-8,
    clip=None,
    wd=0.0,
    decoupled=False,
    threshold=5.0,
):
    """Adam/RAdam as written in the papers, step by step; returns the iterates."""
    m = np.zeros_like(theta)
    v = np.zeros_like(theta)
    out = []
    rho_inf = 2.0 / (1.0 - b2) - 1.0
    for t in range(1, steps + 1):
        g = grad_flat(theta)
        if clip is not None:
            n = np.sqrt(np.sum(g * g))
            if n > clip:
                g = g * (clip / n)
        if wd and not decoupled:
            g = g + wd * theta
        eta = lr(t - 1)
        m = b1 * m + (1.0 - b1) * g
        v = b2 * v + (1.0 - b2) * g * g
        m_hat = m / (1.0 - b1**t)
        v_hat = v / (1.0 - b2**t)
        if kind == "adam":
            step = eta * m_hat / (np.sqrt(v_hat) + eps)
        else:
            rho = rho_inf - 2.0 * t * b2**t / (1.0 - b2**t)
            if rho > threshold:
                r = np.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
                step = eta * r * m_hat / (np.sqrt(v_hat) + eps)
            else:
                step = eta * m_hat
        new = theta - step
        if wd and decoupled:
            new = new - eta * wd * theta
        theta = new
        out.append(theta.copy())
    return out


CASES = [
    ("adam", {}, {}),
    ("adam", {"betas": (0.8, 0.95), "eps": 1e-6}, {"b1": 0.8, "b2": 0.95, "eps": 1e-6}),
    ("adam", {"clip_norm": 1.0}, {"clip": 1.0}),
    ("adam", {"weight_decay": 0.1}, {"wd": 0.1}),
    ("adam", {"weight_decay": 0.1, "decoupled_weight_decay": True}, {"wd": 0.1, "decoupled": True}),
    ("radam", {}, {}),
    ("radam", {"betas": (0.9, 0.9)}, {"b2": 0.9}),  # rho_inf = 19: rectified from t = 6 on
    ("radam", {"betas": (0.9, 0.9), "rho_threshold": 4.0}, {"b2": 0.9, "threshold": 4.0}),
    (
        "radam",
        {"betas": (0.9, 0.9), "clip_norm": 2.0, "weight_decay": 0.01},
        {"b2": 0.9, "clip": 2.0, "wd": 0.01},
    ),
]


@pytest.mark.parametrize("kind, options, ref_options", CASES)
@pytest.mark.parametrize(
    "lr", [1e-2, ExponentialDecay(lr_start=1e-1, lr_end=1e-3, steps=7)], ids=["const", "decay"]
)
def test_update_equals_reference(kind, options, ref_options, lr):
    opt = (Adam if kind == "adam" else RAdam)(lr=lr, **options)
    params = make_params()
    steps = 12
    ref = reference_run(kind, params.flatten(), steps, lr=as_schedule(lr), **ref_options)
    state = opt.init(params)
    for t in range(steps):
        params, state = opt.update(params, grad_params(params), state)
        assert state.step == t + 1
        np.testing.assert_allclose(params.flatten(), ref[t], rtol=0, atol=1e-12)
    assert list(params) == ["W", "b"] and params["W"].shape == (3, 4)


def test_radam_switches_branch_at_threshold():
    opt = RAdam(betas=(0.9, 0.9))
    r = [opt.rectification(t) for t in range(1, 10)]
    rho_inf = 19.0
    rho = [rho_inf - 2 * t * 0.9**t / (1 - 0.9**t) for t in range(1, 10)]
    assert [x is None for x in r] == [p <= 5 for p in rho]
    assert r[0] is None and r[-1] is not None and 0 < r[-1] < 1
    # the paper's threshold rectifies one step earlier, with a tiny factor
    early = [RAdam(betas=(0.9, 0.9), rho_threshold=4.0).rectification(t) for t in range(1, 10)]
    assert sum(x is None for x in early) == sum(p <= 4 for p in rho)
    # with the default beta2 = 0.999 the first five steps are un-adapted (rho_5 < 5 < rho_6)
    default = RAdam()
    assert [default.rectification(t) is None for t in range(1, 8)] == [True] * 5 + [False] * 2


@pytest.mark.parametrize(
    "make",
    [
        lambda: Adam(lr=ExponentialDecay(lr_start=5e-2, lr_end=1e-4, steps=3000)),
        lambda: RAdam(lr=ExponentialDecay(lr_start=5e-2, lr_end=1e-4, steps=3000)),
    ],
)
def test_minimise_rosenbrock_like(make):
    """L = sum (1 - x)^2 + 5 sum (y - x^2)^2 over two arrays; the minimum is x = y = 1."""

    def loss_and_grad(p):
        x, y = p["x"], p["y"]
        r = y - x**2
        loss = float(np.sum((1 - x) ** 2) + 5 * np.sum(r**2))
        return loss, Params(x=-2 * (1 - x) - 20 * r * x, y=10 * r)

    opt = make()
    params = Params(x=np.array([-0.5, 0.0, 0.3]), y=np.array([0.2, 0.2, -0.4]))
    state = opt.init(params)
    loss0, _ = loss_and_grad(params)
    for _ in range(3000):
        loss, g = loss_and_grad(params)
        params, state = opt.update(params, g, state)
    loss, _ = loss_and_grad(params)
    assert loss < 1e-6 * loss0
    np.testing.assert_allclose(params["x"], 1, atol=1e-3)
    np.testing.assert_allclose(params["y"], 1, atol=2e-3)


@pytest.mark.parametrize("cls", [Adam, RAdam])
def test_float32_is_preserved(cls):
    params = make_params(dtype=np.float32)
    opt = cls(lr=1e-2)
    state = opt.init(params)
    for _ in range(7):
        params, state = opt.update(params, grad_params(params).astype(np.float64), state)
    assert params.dtype == np.float32 and state.m.dtype == np.float32
    assert state.v.dtype == np.float32


# -- schedules --------------------------------------------------------------------------------
def test_schedules():
    s = ExponentialDecay(lr_start=1e-3, lr_end=1e-6, steps=1000)
    assert s(0) == 1e-3
    assert math.isclose(s(500), math.sqrt(1e-3 * 1e-6), rel_tol=1e-12)
    assert math.isclose(s(250), 1e-3 * 10 ** (-0.75), rel_tol=1e-12)
    assert s(1000) == 1e-6 and s(10**6) == 1e-6
    assert all(s(k + 1) < s(k) for k in range(999))
    assert Constant(0.5)(0) == 0.5 and Constant(0.5)(10**9) == 0.5
    assert as_schedule(0.25)(17) == 0.25 and isinstance(as_schedule(3), Constant)
    assert as_schedule(s) is s
    assert Adam(lr=2e-3).learning_rate(99) == 2e-3
    assert RAdam(lr=s).learning_rate(500) == s(500)
    with pytest.raises(ValueError, match="step"):
        s(-1)
    with pytest.raises(ValueError, match="lr_end"):
        ExponentialDecay(lr_end=0.0, steps=10)
    with pytest.raises(ValueError, match="steps"):
        ExponentialDecay(steps=0)
    with pytest.raises(TypeError, match="lr"):
        as_schedule("fast")


def test_options_are_validated():
    with pytest.raises(TypeError, match=r"unknown option.*'learning_rate'.*valid.*'lr'"):
        Adam(learning_rate=1e-3)
    with pytest.raises(TypeError, match="keyword"):
        RAdam(1e-3)
    with pytest.raises(ValueError, match="lr"):
        Adam(lr=-1.0)
    with pytest.raises(ValueError, match="betas"):
        Adam(betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="clip_norm"):
        RAdam(clip_norm=0.0)
    with pytest.raises(ValueError, match="weight_decay"):
        RAdam(weight_decay=-0.1)
    with pytest.raises(ValueError, match="rho_threshold"):
        RAdam(rho_threshold=3.0)
    opt = RAdam(lr=1e-3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        opt.lr = 1.0
    assert dataclasses.replace(opt, lr=2e-3).lr == 2e-3
    assert opt == RAdam(lr=1e-3) and hash(opt) == hash(RAdam(lr=1e-3))


def test_mismatched_structure_is_an_error():
    params = make_params()
    opt = Adam()
    state = opt.init(params)
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        opt.update(params, {"W": np.zeros((3, 4))}, state)
    with pytest.raises(ValueError, match=r"grads\['b'\] must have shape \(5,\)"):
        opt.update(params, {"W": np.zeros((3, 4)), "b": np.zeros(4)}, state)


# -- clipping and non-finite gradients --------------------------------------------------------
def test_clip_by_global_norm():
    g = Params(a=np.array([3.0, 0.0]), b=np.array([[4.0]]))
    clipped, norm = clip_by_global_norm(g, 1.0)
    assert norm == 5.0
    np.testing.assert_allclose(clipped["a"], [0.6, 0.0], rtol=1e-15)
    np.testing.assert_allclose(clipped["b"], [[0.8]], rtol=1e-15)
    assert math.isclose(global_norm(clipped), 1.0, rel_tol=1e-15)
    same, norm = clip_by_global_norm(g, 10.0)
    assert norm == 5.0 and same["a"] is g["a"]
    # no overflow for huge (finite) gradients, nor underflow for tiny ones
    huge = Params(a=np.full(4, 1e200), b=np.full(2, -1e200))
    clipped, norm = clip_by_global_norm(huge, 2.0)
    assert math.isclose(norm, math.sqrt(6) * 1e200, rel_tol=1e-14)
    assert math.isclose(global_norm(clipped), 2.0, rel_tol=1e-14)
    assert math.isclose(global_norm(Params(a=np.full(9, 1e-200))), 3e-200, rel_tol=1e-14)
    zero, norm = clip_by_global_norm(Params(a=np.zeros(3)), 1.0)
    assert norm == 0.0 and np.all(zero["a"] == 0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("cls", [Adam, RAdam])
def test_nonfinite_gradient_names_the_parameter(cls, bad):
    params = make_params()
    opt = cls(clip_norm=1.0)
    state = opt.init(params)
    b = np.zeros(5)
    b[3] = bad
    grads = Params(W=np.ones((3, 4)), b=b)
    kind = "NaN" if np.isnan(bad) else "Inf"
    with pytest.raises(
        FloatingPointError, match=rf"parameter 'b' is not finite \({kind} at index \(3,\)"
    ):
        opt.update(params, grads, state)
    with pytest.raises(FloatingPointError, match="'b'"):
        cls().update(params, grads, state)  # without clipping too
    with pytest.raises(FloatingPointError, match="'b'"):
        clip_by_global_norm(grads, 1.0)


# -- state ------------------------------------------------------------------------------------
@pytest.mark.parametrize("cls", [Adam, RAdam])
def test_state_round_trip_gives_identical_updates(cls):
    opt = cls(lr=ExponentialDecay(lr_start=1e-2, lr_end=1e-4, steps=20), clip_norm=5.0)
    params = make_params()
    state = opt.init(params)
    for _ in range(4):
        params, state = opt.update(params, grad_params(params), state)
    arrays = {k: np.array(v, copy=True) for k, v in state.to_arrays(prefix="opt/").items()}
    assert set(arrays) == {"opt/step", "opt/grad_norm", "opt/m/W", "opt/m/b", "opt/v/W", "opt/v/b"}
    restored = OptimizerState.from_arrays({**arrays, "other": np.zeros(1)}, params, prefix="opt/")
    assert restored.step == 4 and restored.grad_norm == state.grad_norm
    p1, p2, s1, s2 = params, params.copy(), state, restored
    for _ in range(10):
        p1, s1 = opt.update(p1, grad_params(p1), s1)
        p2, s2 = opt.update(p2, grad_params(p2), s2)
        for k in p1:
            assert np.array_equal(p1[k], p2[k])
            assert np.array_equal(s1.m[k], s2.m[k]) and np.array_equal(s1.v[k], s2.v[k])
    with pytest.raises(ValueError, match="opt/v/b"):
        OptimizerState.from_arrays(
            {k: v for k, v in arrays.items() if k != "opt/v/b"}, params, prefix="opt/"
        )
    with pytest.raises(ValueError, match="shape"):
        OptimizerState.from_arrays({**arrays, "opt/m/W": np.zeros((4, 3))}, params, prefix="opt/")


def test_update_leaves_inputs_untouched():
    params = make_params()
    before = params.copy()
    opt = Adam()
    state = opt.init(params)
    new, _ = opt.update(params, grad_params(params), state)
    assert all(np.array_equal(params[k], before[k]) for k in params)
    assert state.step == 0 and np.all(state.m.flatten() == 0)
    assert not np.array_equal(new.flatten(), params.flatten())


# -- SciPy ------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_scipy_objective_lbfgsb(dtype):
    rng = np.random.default_rng(3)
    n = 17
    Q = rng.standard_normal((n, n))
    H = Q @ Q.T / n + np.eye(n)
    c = rng.standard_normal(n)
    calls = []

    def fun(p):
        calls.append(p)
        assert isinstance(p, Params) and p.dtype == dtype
        d = p.flatten().astype(np.float64) - c
        return 0.5 * d @ H @ d, p.unflatten((H @ d).astype(dtype))

    template = make_params(dtype=dtype)
    obj = ScipyObjective(fun, template)
    assert obj.x0.dtype == np.float64 and np.array_equal(obj.x0, template.flatten())
    res = scipy.optimize.minimize(
        obj,
        obj.x0,
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 1e-20, "maxiter": 500},
    )
    tol = 1e-8 if dtype == np.float64 else 1e-3
    fitted = obj.params(res.x)
    assert list(fitted) == ["W", "b"] and fitted.dtype == dtype
    np.testing.assert_allclose(fitted.flatten(), c, atol=tol)
    assert obj.n_evals == res.nfev == len(calls)
    assert obj.best_loss == min(res.fun, obj.best_loss) and obj.best_x is not None
    loss, g = obj(obj.x0)
    assert isinstance(loss, float) and g.dtype == np.float64 and g.shape == (n,)
    with pytest.raises(ValueError, match="shape"):
        obj.params(np.zeros(3))


# -- GPU --------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("cls", [Adam, RAdam])
def test_cupy_matches_numpy(cls):
    import cupy

    opt = cls(lr=1e-2, clip_norm=3.0)
    p_np = make_params()
    p_cp = p_np.map(cupy.asarray)
    s_np, s_cp = opt.init(p_np), opt.init(p_cp)
    for _ in range(8):
        p_np, s_np = opt.update(p_np, grad_params(p_np), s_np)
        p_cp, s_cp = opt.update(p_cp, grad_params(p_cp), s_cp)
    assert isinstance(p_cp["W"], cupy.ndarray) and isinstance(s_cp.m["b"], cupy.ndarray)
    np.testing.assert_allclose(cupy.asnumpy(p_cp.flatten()), p_np.flatten(), rtol=1e-12)
    restored = OptimizerState.from_arrays(s_cp.to_arrays(), p_cp)
    assert isinstance(restored.v["W"], cupy.ndarray)
    bad = grad_params(p_cp).replace(W=cupy.full((3, 4), cupy.nan))
    with pytest.raises(FloatingPointError, match="'W'"):
        opt.update(p_cp, bad, s_cp)
