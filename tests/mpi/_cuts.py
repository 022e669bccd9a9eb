"""Uneven slices of a time axis for the MPI test scripts (imported beside them)."""

import numpy as np


def uneven(T, size, seed):
    """Bounds of ``size`` slices of T steps at random cut points, rank 0 holding a single
    step when there are several ranks."""
    rng = np.random.default_rng(seed)
    cuts = np.sort(rng.choice(np.arange(1, T), size=size - 1, replace=False))
    if size > 1:
        cuts[0] = 1
    return np.concatenate([[0], cuts, [T]]).astype(int)
