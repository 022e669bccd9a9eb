"""The forced recurrence written in its predictions (:class:`ForcedPredictionModel`), the form
the GTF loss solves: its compiled loops equal the generic ones, its derivatives equal finite
differences, its fused evaluation equals the unfused one bit for bit, and its trajectory is
that of :class:`ForcedModel`.
"""

from __future__ import annotations

import numpy as np
import pytest

from pitsolve.models import ForcedModel, ForcedPredictionModel, ShPLRNN
from pitsolve.models.base import Model, step_loop
from pitsolve.testing import check_derivatives

from .test_forced_kernels import MODELS, T, _assert_params, _assert_rel
from .test_forced_kernels import _data as _forced_data

BATCH_SHAPES = [(), (3,)]
ONE_PASS = {"shplrnn", "clipped", "alrnn"}  # compiled prediction loops; the others via forced


def _data(model, lead, seed=0, dtype=np.float64, T_in=T):
    """``h0``, inputs ``[x_t, ẑ_{t-1}, a_{t-1}]`` (``T_in`` steps), the predictions, ``g``."""
    h0, inputs, _, g = _forced_data(model, lead, seed, dtype, T_in)
    return h0, inputs, ForcedPredictionModel(model).sequential(h0, inputs, T), g


def _count(monkeypatch, model, names):
    calls = []
    cls = type(model)
    for name in names:
        fast = getattr(cls, name)
        monkeypatch.setattr(cls, name, lambda *a, _f=fast, **k: calls.append(1) or _f(*a, **k))
    return calls


@pytest.mark.parametrize("lead", BATCH_SHAPES, ids=str)
@pytest.mark.parametrize("name", MODELS)
def test_compiled_loops_match_the_generic_ones(name, lead, monkeypatch):
    """``sequential`` == the step loop of f, ``bptt`` == :meth:`Model.bptt` (VJPs only), and
    both ran the base model's compiled loops."""
    model = MODELS[name]()
    fm = ForcedPredictionModel(model)
    h0, inputs, _, g = _data(model, lead, seed=1)
    ref_states = step_loop(fm, h0, inputs, T)
    ref = Model.bptt(fm, h0, inputs, ref_states, g)
    one_pass = name in ONE_PASS
    calls = _count(monkeypatch, model, ["_loop_predictions", "_loop_bptt_predictions"]
                   if one_pass else ["_loop", "_loop_bptt"])
    states = fm.sequential(h0, inputs, T)
    p, hb, xb = fm.bptt(h0, inputs, states, g)
    assert len(calls) == 2, "the compiled loops were not used"
    assert states.shape == (*lead, T, model.state_dim) and states.dtype == np.float64
    _assert_rel(states, ref_states, 1e-13)
    _assert_params(p, ref[0], 1e-12)
    for got, want in zip((hb, xb), ref[1:], strict=True):
        assert got.shape == want.shape
        _assert_rel(got, want, 1e-12)


@pytest.mark.parametrize("name", ["shplrnn", "alrnn", "elman", "gru"])
def test_shared_h0_and_longer_inputs(name):
    """h0 shared by the batch gets its cotangent summed; input steps beyond T get zero."""
    model = MODELS[name]()
    fm = ForcedPredictionModel(model)
    _, inputs, _, _ = _data(model, (3,), seed=4, T_in=T + 2)
    h0 = np.random.default_rng(5).normal(size=model.state_dim)
    states = fm.sequential(h0, inputs, T)
    _assert_rel(states, step_loop(fm, np.broadcast_to(h0, (3, h0.size)), inputs, T), 1e-13)
    g = np.random.default_rng(6).normal(size=states.shape)
    p, hb, xb = fm.bptt(h0, inputs, states, g)
    ref = Model.bptt(fm, h0, inputs, states, g)
    assert hb.shape == h0.shape and xb.shape == inputs.shape and not xb[:, T:].any()
    _assert_params(p, ref[0], 1e-12)
    _assert_rel(hb, ref[1], 1e-12)
    _assert_rel(xb, ref[2], 1e-12)


@pytest.mark.parametrize("name", MODELS)
def test_float32_preserved(name):
    model = MODELS[name]()
    fm32 = ForcedPredictionModel(model.astype(np.float32))
    h0, inputs, states, g = _data(model, (2,), seed=3)
    s32 = fm32.sequential(h0.astype(np.float32), inputs.astype(np.float32), T)
    assert s32.dtype == np.float32
    _assert_rel(s32, states, 1e-5)
    p, hb, xb = fm32.bptt(h0.astype(np.float32), inputs.astype(np.float32), s32,
                          g.astype(np.float32))
    assert hb.dtype == xb.dtype == np.float32 and all(v.dtype == np.float32 for v in p.values())
    p64, hb64, _ = ForcedPredictionModel(model).bptt(h0, inputs, states, g)
    _assert_rel(p.flatten(), p64.flatten(), 1e-3)
    _assert_rel(hb, hb64, 1e-3)


@pytest.mark.parametrize("name", MODELS)
def test_derivatives_match_finite_differences(name):
    check_derivatives(ForcedPredictionModel(MODELS[name]()), seed=2)


@pytest.mark.parametrize("name", ["shplrnn", "alrnn", "elman"])
def test_same_trajectory_as_the_forced_model(name):
    """From h0 with a_0 = 1 the predictions are z_t = f(z̃_{t-1}) of ForcedModel's states."""
    model = MODELS[name]()
    h0, inputs, _, _ = _data(model, (2,), seed=7)
    N, D = model.input_dim, model.state_dim
    x, zhat, a = inputs[..., :N], inputs[..., N : N + D], inputs[..., N + D :].copy()
    a[..., 0, :] = 1.0
    pred = ForcedPredictionModel(model).sequential(h0, np.concatenate([x, zhat, a], -1), T)
    # ForcedModel from z̃_0 = ẑ_0 with the forcing of steps 1..T-1
    shifted = np.concatenate([x[..., :-1, :], zhat[..., 1:, :], a[..., 1:, :]], axis=-1)
    forced = ForcedModel(model).sequential(zhat[..., 0, :], shifted, T - 1)
    prev = np.concatenate([zhat[..., :1, :], forced], axis=-2)
    _assert_rel(pred, model.f(prev, x if N else None), 1e-13)


@pytest.mark.parametrize("clipped", [False, True])
@pytest.mark.parametrize("M", [3, 20])  # the dense Jacobian in the kernel / by BLAS
def test_fused_forced_evaluation_equals_unfused(M, clipped):
    """f, J and diag J of h ↦ f((1 - a) h + a ẑ): the one-pass kernel gives bit for bit what
    forcing first and evaluating the model gives."""
    from pitsolve.models import ClippedShPLRNN

    model = (ClippedShPLRNN if clipped else ShPLRNN)(M, 12, seed=3)
    fm = ForcedPredictionModel(model)
    rng = np.random.default_rng(8)
    h = rng.normal(size=(2, 300, M))
    a = rng.uniform(0, 1, size=h.shape)
    a[:, ::7] = 1.0
    a[:, ::5] = 0.0
    zhat = rng.normal(size=h.shape)
    x = np.concatenate([zhat, a], axis=-1)
    u = (1 - a) * h + a * zhat
    f, J = fm.f_and_jacobian(h, x)
    np.testing.assert_array_equal(f, model.f(u))
    np.testing.assert_array_equal(J, model.jacobian(u) * (1 - a)[..., None, :])
    f2, d = fm.f_and_diagonal_jacobian(h, x)
    np.testing.assert_array_equal(f2, f)
    np.testing.assert_array_equal(d, model.diagonal_jacobian(u) * (1 - a))
    np.testing.assert_array_equal(fm.f(h, x), f)
    np.testing.assert_array_equal(fm.jacobian(h, x), J)


def test_overflow_propagates_without_warnings():
    """A diverging model's adjoint overflows to inf/NaN silently, as the compiled loops do
    (warnings are errors in this suite)."""
    model = MODELS["shplrnn"]()
    h0, inputs, states, g = _data(model, (2,), seed=9)
    _, _, xb = ForcedPredictionModel(model).bptt(h0, inputs, 1e300 * states, 1e300 * g)
    assert not np.isfinite(xb).all()
