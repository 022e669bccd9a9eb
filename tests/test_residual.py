"""The fused DEER convergence test equals its NumPy reference, NaN included."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from pitsolve.kernels.residual import residual_norms, residual_norms_xp
from pitsolve.kernels.update import all_finite, apply_step, step_size


@given(seed=st.integers(0, 2**31), batch=st.lists(st.integers(1, 3), max_size=2),
       T=st.one_of(st.integers(1024, 3000), st.integers(8000, 20000)),  # 1 or several chunks
       nan=st.booleans(), converged=st.booleans())
def test_fused_residual_equals_reference(seed, batch, T, nan, converged):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(*batch, T, 3))
    f = h + 1e-9 * rng.normal(size=h.shape)
    if not converged:
        f[..., rng.integers(T):, 1] += 1.0
    if nan:
        f.reshape(-1)[rng.integers(f.size)] = np.nan
    out = np.empty_like(h)
    a, b = residual_norms(h, f, 1e-10, 1e-8, out=out), residual_norms_xp(h, f, 1e-10, 1e-8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], rtol=1e-15)
    assert a[2] == b[2]
    assert a[0].shape == tuple(batch)
    np.testing.assert_array_equal(out, f - h)  # the Newton right-hand side, same pass


@given(seed=st.integers(0, 2**31), T=st.sampled_from([5, 40000]),  # one task or several
       bad=st.sampled_from([None, np.nan, np.inf, -np.inf]), dtype=st.sampled_from(["f4", "f8"]))
def test_apply_step_and_finiteness_equal_numpy(seed, T, bad, dtype):
    rng = np.random.default_rng(seed)
    h = rng.normal(size=(T, 3)).astype(dtype)
    delta = rng.normal(size=h.shape).astype(dtype)
    if bad is not None:
        delta[rng.integers(T), rng.integers(3)] = bad
    expected = h + delta
    finite, step, size = apply_step(h, delta)
    np.testing.assert_array_equal(h, expected)  # updated in place (also when not finite)
    assert finite == bool(np.isfinite(delta).all()) == all_finite(delta)
    if finite:
        assert step == np.abs(delta).max() and size == np.abs(expected).max()
    else:
        assert step == size == np.inf


@given(seed=st.integers(0, 2**31), shape=st.sampled_from([(7, 3), (2, 50, 4), (3, 1, 2)]),
       bad=st.sampled_from([None, np.nan, np.inf, -np.inf]), strided=st.booleans())
def test_fused_step_size_and_finiteness_equal_numpy(seed, shape, bad, strided):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(*shape[:-2], 2 * shape[-2], shape[-1]))
    new = base[..., ::2, :] if strided else base[..., : shape[-2], :]  # views, like segments
    old = new + rng.normal(size=new.shape)
    if bad is not None:
        new[(*(rng.integers(n) for n in new.shape),)] = bad
    finite, step, size = step_size(new, old)
    assert finite == bool(np.isfinite(new).all()) == all_finite(np.ascontiguousarray(new))
    if finite:
        assert step == np.abs(new - old).max() and size == np.abs(new).max()
    else:
        assert step == size == np.inf
