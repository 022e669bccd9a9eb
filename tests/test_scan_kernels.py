"""Every scan kernel equals the naive loop, forward and reverse; the reverse is the adjoint."""

from __future__ import annotations

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pitsolve.kernels import KERNELS, affine_scan, affine_scan_transpose

from . import naive
from .strategies import affine_maps, scan_cases

ALL_KERNELS = sorted(KERNELS)
CHUNKED = [k for k in ALL_KERNELS if KERNELS[k][2]]


def assert_close(x, ref, dtype):
    """Agreement relative to the size of the reference trajectory."""
    tol = 1e-11 if dtype == np.float64 else 2e-5
    scale = 1.0 + np.max(np.abs(ref))
    err = np.max(np.abs(x.astype(np.float64) - ref)) if x.size else 0.0
    assert err <= tol * scale * max(1, ref.shape[-2]) ** 0.5, f"error {err:.3e} (scale {scale})"


def as64(*arrays):
    return [a.astype(np.float64) for a in arrays]


@pytest.mark.parametrize("kernel", ALL_KERNELS)
@given(case=scan_cases())
def test_forward_equals_loop(kernel, case):
    A, b, h0 = case
    out = affine_scan(A, b, h0, kernel=kernel)
    assert out.dtype == b.dtype and out.shape == b.shape and type(out) is np.ndarray
    assert_close(out, naive.scan_forward(*as64(A, b, h0)), b.dtype)


@pytest.mark.parametrize("kernel", ALL_KERNELS)
@given(case=scan_cases())
def test_reverse_equals_loop(kernel, case):
    A, g, _ = case
    lam, h0_bar = affine_scan_transpose(A, g, kernel=kernel)
    assert lam.dtype == g.dtype and lam.shape == g.shape
    assert h0_bar.dtype == g.dtype and h0_bar.shape == (*g.shape[:-2], g.shape[-1])
    ref = naive.scan_reverse(*as64(A, g))
    assert_close(lam, ref, g.dtype)


@pytest.mark.parametrize("kernel", ALL_KERNELS)
@given(case=scan_cases(dtypes=(np.float64,)), seed=st.integers(0, 2**32 - 1))
def test_reverse_is_adjoint_of_forward(kernel, case, seed):
    """Dot-product test: ⟨h(b, h0), g⟩ = ⟨b, λ⟩ + ⟨h0, A_1ᵀ λ_1⟩."""
    A, b, h0 = case
    g = np.random.default_rng(seed).normal(size=b.shape)
    h = affine_scan(A, b, h0, kernel=kernel)
    lam, h0_bar = affine_scan_transpose(A, g, kernel=kernel)
    lhs = np.sum(h * g)
    rhs = np.sum(b * lam) + np.sum(h0 * h0_bar)
    assert abs(lhs - rhs) <= 1e-10 * (np.sum(np.abs(h * g)) + np.sum(np.abs(b * lam)) + 1)


BLOCK_SIZES = [1, 2, 3, 32]


def _block_lengths(bs):
    return sorted({t for t in (1, 2, bs - 1, bs, bs + 1, 2 * bs + 1, 37) if t >= 1})


@pytest.mark.parametrize("kernel", CHUNKED)
@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("bs", BLOCK_SIZES)
def test_block_boundaries(kernel, dense, dtype, bs):
    """Chunk sizes {1, 2, 3, 32} with T straddling the chunk edges, forward and reverse."""
    rng = np.random.default_rng(bs)
    for T in _block_lengths(bs):
        A, b, h0 = affine_maps(rng, (2,), T, 3, dense=dense, radius=0.95, dtype=dtype)
        out = affine_scan(A, b, h0, kernel=kernel, chunk_size=bs)
        assert out.dtype == dtype
        assert_close(out, naive.scan_forward(*as64(A, b, h0)), dtype)
        lam, _ = affine_scan_transpose(A, b, kernel=kernel, chunk_size=bs)
        assert_close(lam, naive.scan_reverse(*as64(A, b)), dtype)


@pytest.mark.parametrize("kernel", ALL_KERNELS)
def test_nan_propagates_like_the_loop(kernel):
    """No fast-math: a NaN in b poisons exactly the states the loop poisons."""
    rng = np.random.default_rng(0)
    A, b, h0 = affine_maps(rng, (1,), 40, 2, dense=False, radius=0.9)
    b[0, 17, 1] = np.nan
    out = affine_scan(A, b, h0, kernel=kernel)
    ref = naive.scan_forward(A, b, h0)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))


@pytest.mark.parametrize("kernel", ALL_KERNELS)
def test_batch_axes_and_non_contiguous_inputs(kernel):
    """Several batch axes and transposed (non-contiguous) views give the loop's answer."""
    rng = np.random.default_rng(1)
    A, b, h0 = affine_maps(rng, (3, 2), 9, 4, dense=True, radius=0.8)
    A_view = np.swapaxes(np.swapaxes(A, 0, 1).copy(), 0, 1)  # same values, odd strides
    out = affine_scan(A_view, b, h0, kernel=kernel)
    assert out.shape == (3, 2, 9, 4)
    assert_close(out, naive.scan_forward(A, b, h0), np.float64)


@given(seed=st.integers(0, 2**31), D=st.integers(1, 5), dense=st.booleans(),
       T=st.integers(1, 300), log_lam=st.floats(-5, 2), scale=st.floats(0.1, 1.2))
def test_compiled_riccati_equals_the_log_depth_covariance_scan(seed, D, dense, T, log_lam,
                                                               scale):
    """The ELK filter covariances: compiled recursion == parallel (A, C, J) scan."""
    from pitsolve.kernels.kalman import _filter_covariances, _filter_covariances_compiled, _Ops

    rng = np.random.default_rng(seed)
    F = scale * rng.normal(size=(2, T, D, D) if dense else (2, T, D)) / np.sqrt(D)
    s2 = 10.0 ** -log_lam
    ref = _filter_covariances(_Ops(np, dense, D, F.dtype), F, s2)
    got = _filter_covariances_compiled(F, s2)
    np.testing.assert_allclose(got, ref, rtol=1e-9, atol=1e-12 * np.abs(ref).max())


@given(seed=st.integers(0, 2**31), D=st.integers(1, 6), n=st.integers(1, 40),
       cols=st.integers(1, 4))
def test_compiled_spd_solve_equals_numpy(seed, D, n, cols):
    from pitsolve.kernels.kalman import _spd_solve

    rng = np.random.default_rng(seed)
    G = rng.normal(size=(2, n, D, D))
    S = G @ np.swapaxes(G, -1, -2) + 0.1 * np.eye(D)
    Y = rng.normal(size=(2, n, D, cols))
    np.testing.assert_allclose(_spd_solve(S, Y), np.linalg.solve(S, Y), rtol=1e-8, atol=1e-10)


@given(seed=st.integers(0, 2**31), D=st.integers(2, 6), radius=st.sampled_from([0.5, 0.97, 1.0005]),
       dtype=st.sampled_from([np.float64, np.float32]), nan=st.booleans())
@settings(max_examples=30, deadline=None)
def test_split_dense_scan_equals_the_loop(seed, D, radius, dtype, nan):
    """One series, dense maps, more than one thread: the chunks run in parallel from a zero
    carry-in and the carry's effect is added after, until negligible (contracting maps) or
    to the chunk's end (radius > 1). The result is the loop's, forward and reverse, NaN
    included."""
    from pitsolve.kernels import numba_scan

    if numba.get_num_threads() < 2:
        pytest.skip("the split scan needs two threads")
    rng = np.random.default_rng(seed)
    T = 25_000 // D + int(rng.integers(0, 99))
    A, b, h0 = affine_maps(rng, (1,), T, D, dense=True, radius=radius, dtype=dtype)
    if nan:
        b[0, int(rng.integers(T)), 0] = np.nan
    calls, split = [], numba_scan._run_split
    numba_scan._run_split = lambda *a: calls.append(1) or split(*a)
    try:
        out = affine_scan(A, b, h0, kernel="numba")
        lam, _ = affine_scan_transpose(A, b, kernel="numba")
    finally:
        numba_scan._run_split = split
    assert len(calls) == 2
    ref, ref_lam = numba_scan.scan_sequential(A, b, h0), numba_scan.scan_sequential_reverse(A, b)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    np.testing.assert_array_equal(np.isnan(lam), np.isnan(ref_lam))
    for x, r in ((out, ref), (lam, ref_lam)):
        ok = ~np.isnan(r)
        assert_close(np.where(ok, x, 0), np.where(ok, r, 0).astype(np.float64), dtype)
