"""Hypothesis strategies that construct well-posed inputs instead of filtering them."""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st


def affine_maps(rng: np.random.Generator, batch, T, D, *, dense, radius, dtype=np.float64):
    """(A, b, h0) with every A_t of 2-norm (dense) or modulus (diagonal) at most ``radius``."""
    if dense:
        M = rng.normal(size=(*batch, T, D, D))
        norms = np.linalg.norm(M, ord=2, axis=(-2, -1))[..., None, None]
        A = radius * rng.uniform(0, 1, size=(*batch, T, 1, 1)) * M / norms
    else:
        A = rng.uniform(-radius, radius, size=(*batch, T, D))
    b = rng.normal(size=(*batch, T, D))
    h0 = rng.normal(size=(*batch, D))
    return A.astype(dtype), b.astype(dtype), h0.astype(dtype)


@st.composite
def scan_cases(draw, *, max_T=70, max_D=5, dtypes=(np.float64, np.float32), expanding=True):
    """A random scan problem: batch shape, T, D, structure, dtype and spectral radius drawn.

    Contracting cases draw the radius below 1; expanding ones (float64, short T) above 1.
    """
    dtype = draw(st.sampled_from(dtypes))
    expand = expanding and dtype == np.float64 and draw(st.booleans())
    T = draw(st.integers(1, 12 if expand else max_T))
    D = draw(st.integers(1, max_D))
    batch = tuple(draw(st.lists(st.integers(1, 3), max_size=2)))
    dense = draw(st.booleans())
    radius = draw(st.floats(1.0, 1.6) if expand else st.floats(0.0, 0.99))
    seed = draw(st.integers(0, 2**32 - 1))
    A, b, h0 = affine_maps(np.random.default_rng(seed), batch, T, D, dense=dense, radius=radius,
                           dtype=dtype)
    return A, b, h0
