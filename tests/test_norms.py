"""The compiled spectral norms of small matrices (aGTF's estimator) against LAPACK's SVD."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pitsolve.kernels.norms import MAX_JACOBI_DIM, spectral_norms


@settings(max_examples=40, deadline=None)
@given(M=st.integers(1, MAX_JACOBI_DIM + 2), n=st.integers(0, 30), seed=st.integers(0, 2**31),
       scale=st.sampled_from([1e-150, 1e-3, 1.0, 1e3, 1e150]),
       rank=st.sampled_from(["full", "one", "zero"]))
def test_spectral_norms_equal_svd(M, n, seed, scale, rank):
    rng = np.random.default_rng(seed)
    J = scale * rng.standard_normal((n, M, M))
    if rank == "one":
        J = J[..., :1] * rng.standard_normal((n, 1, M))
    elif rank == "zero":
        J[...] = 0.0
    ref = np.linalg.norm(J, ord=2, axis=(-2, -1))
    got = spectral_norms(J)
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=0.0)


def test_spectral_norms_shapes_dtypes_and_nonfinite():
    rng = np.random.default_rng(0)
    J = rng.standard_normal((4, 5, 3, 3))
    assert spectral_norms(J).shape == (4, 5)
    J32 = J.astype(np.float32)
    got = spectral_norms(J32)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, np.linalg.norm(J, 2, axis=(-2, -1)), rtol=1e-6)
    J[1, 2, 0, 1] = np.nan
    J[2, 0, 2, 2] = np.inf
    got = spectral_norms(J)
    assert np.isnan(got[1, 2]) and np.isnan(got[2, 0])
    assert np.isfinite(np.delete(got.ravel(), [7, 10])).all()
    with pytest.raises(ValueError, match="J must have shape"):
        spectral_norms(np.zeros((3, 2)))
