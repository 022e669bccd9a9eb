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

ALL_KERNELS = sorted(k for k in KERNELS if k != "cuda")  # cuda: tests/test_cuda_kernels.py
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


# --------------------------------------------------------------------------
# Strongly contracting maps: the blocked scan's transfer maps (products of a chunk's maps)
# fall below the smallest normal number; phase 1 flushes them to zero below tiny * 2**20
# instead of leaving them in slow subnormal arithmetic.


def _contracting(rng, T, D, *, dense, structure="diag", log2_scale=0, dtype=np.float64):
    """(A, b, h0), batch 1: ``|A_t| ~ U(0.5, 0.99) * 2**-log2_scale`` (diagonal, or dense with
    that spectral norm: ``structure`` "diag" = diagonal matrices, "full" = random ones)."""
    s = rng.uniform(0.5, 0.99, (1, T, D if structure == "diag" else 1)) * 2.0**-log2_scale
    if not dense:
        A = s * rng.choice([-1.0, 1.0], (1, T, D))
    elif structure == "diag":
        A = np.zeros((1, T, D, D))
        A[:, :, np.arange(D), np.arange(D)] = s
    else:
        M = rng.normal(size=(1, T, D, D))
        A = s[..., None] * M / np.linalg.norm(M, ord=2, axis=(-2, -1))[..., None, None]
    b = rng.normal(size=(1, T, D))
    h0 = rng.normal(size=(1, D))
    return A.astype(dtype), b.astype(dtype), h0.astype(dtype)


def _blocked_with_maps(A, b, h0, cs, reverse):
    """The blocked kernel's outputs and its phase-1 transfer maps ``PHI[0, 1:C-1]``."""
    from pitsolve.kernels import numba_scan

    B, T, D = b.shape
    C = -(-T // cs)
    E = np.full((B, C, D), np.nan, dtype=b.dtype)
    PHI = np.full((B, C, *A.shape[2:]), np.nan, dtype=b.dtype)
    CARRY = np.full((B, C, D), np.nan, dtype=b.dtype)
    out = np.empty_like(b)
    kernel = numba_scan._blocked_reverse if reverse else numba_scan._blocked_forward
    kernel(A, b, np.zeros_like(h0) if reverse else h0, out, cs, E, PHI, CARRY)
    return out, PHI[0, 1 : C - 1]


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("dense", "D"), [(False, 1), (False, 3), (True, 2), (True, 9)])
@pytest.mark.parametrize("reverse", [False, True])
def test_transfer_maps_of_contracting_chunks_are_never_subnormal(dtype, dense, D, reverse):
    """A_t ~ U(0.5, 0.99) over 4000-step chunks: the products fall below the smallest normal
    number within ~2300 steps (float64) and, unflushed, stay at the smallest subnormal
    (x * 0.99 rounds back to x). Every transfer-map entry must be 0 or >= tiny * 2**20 in
    magnitude, and the outputs must still be the loop's. (D = 9 dense takes the vectorised
    map product, D = 2 the scalar one.)"""
    from pitsolve.kernels import numba_scan

    rng = np.random.default_rng(D)
    cs = 4000
    A, b, h0 = _contracting(rng, 3 * cs + 5, D, dense=dense, dtype=dtype)
    out, phi = _blocked_with_maps(A, b, h0, cs, reverse)
    floor = np.finfo(dtype).tiny * 2.0**20
    assert phi.shape[0] == 2 and not np.isnan(phi).any()
    assert np.all((phi == 0) | (np.abs(phi) >= floor)), f"subnormal maps: {phi[phi != 0]}"
    ref = numba_scan.scan_sequential_reverse(A, b) if reverse else numba_scan.scan_sequential(
        A, b, h0)
    assert_close(out, ref.astype(np.float64), dtype)


@given(seed=st.integers(0, 2**32 - 1), dtype=st.sampled_from([np.float64, np.float32]),
       dense=st.booleans(), structure=st.sampled_from(["diag", "full"]), D=st.integers(1, 9),
       bs=st.sampled_from(BLOCK_SIZES), chunks=st.integers(1, 4), offset=st.integers(-1, 1),
       log2_scale=st.sampled_from([0, 20, 60, 110]))
@settings(max_examples=60)
def test_blocked_scans_equal_the_loop_on_strongly_contracting_maps(seed, dtype, dense,
                                                                  structure, D, bs, chunks,
                                                                  offset, log2_scale):
    """Chunk sizes {1, 2, 3, 32}, T at and around multiples of the chunk size, maps that shrink
    by up to 2**-110 a step (the transfer maps cross the flush floor within a chunk, or the
    maps themselves lie below it): forward and reverse equal the loop to rounding."""
    from pitsolve.kernels import numba_scan

    T = max(1, chunks * bs + offset)
    rng = np.random.default_rng(seed)
    A, b, h0 = _contracting(rng, T, D, dense=dense, structure=structure,
                            log2_scale=log2_scale, dtype=dtype)
    out = numba_scan.scan_blocked(A, b, h0, chunk_size=bs)
    lam = numba_scan.scan_blocked_reverse(A, b, chunk_size=bs)
    assert out.dtype == dtype and lam.dtype == dtype
    assert_close(out, naive.scan_forward(*as64(A, b, h0)), dtype)
    assert_close(lam, naive.scan_reverse(*as64(A, b)), dtype)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("dense", [False, True])
@pytest.mark.parametrize("where", ["A", "b"])
@pytest.mark.parametrize("t_bad", [5, 4000, 4001, 7000, 11999, 12003])
def test_non_finite_values_propagate_through_flushed_maps(dtype, dense, where, t_bad):
    """NaN in A or b (in chunk 0, at a chunk's first step, after its map was flushed to zero,
    at its last step, in the last chunk) poisons exactly the outputs the loop poisons, forward
    and reverse; an Inf in A leaves non-finite exactly the outputs the loop leaves non-finite
    (0 * Inf is NaN where the loop may have Inf)."""
    from pitsolve.kernels import numba_scan

    rng = np.random.default_rng(t_bad)
    cs = 4000
    A, b, h0 = _contracting(rng, 3 * cs + 5, 2, dense=dense, dtype=dtype)
    for bad, same in ((np.nan, np.isnan), (np.inf, np.isfinite)):
        if where == "b" and bad == np.inf:
            continue
        A2, b2 = A.copy(), b.copy()
        if where == "b":
            b2[0, t_bad, 1] = bad
        elif dense:
            A2[0, t_bad, 1, 0] = bad
        else:
            A2[0, t_bad, 1] = bad
        for reverse in (False, True):
            out = _blocked_with_maps(A2, b2, h0, cs, reverse)[0]
            ref = (numba_scan.scan_sequential_reverse(A2, b2) if reverse
                   else numba_scan.scan_sequential(A2, b2, h0))
            np.testing.assert_array_equal(same(out), same(ref))
            ok = np.isfinite(ref)
            assert ok.any() and not ok.all()
            assert_close(np.where(ok, out, 0), np.where(ok, ref, 0).astype(np.float64), dtype)
