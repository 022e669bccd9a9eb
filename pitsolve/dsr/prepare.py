r"""A measured series made ready for reconstruction: checked, z-scored, delay-embedded, with
its held-out tail sized.

``pitsolve reconstruct FILE`` trains on a series read from a file
(:func:`~pitsolve.dsr.io.load_series` has already rejected NaN and Inf). :func:`prepare_series`

1. rejects constant columns (they carry no dynamics, and z-scoring would divide by zero);
2. z-scores every column, :math:`(x_{t,n} - \mu_n)/\sigma_n`, with the mean and standard
   deviation of the whole series (kept, so that a test series can be scaled the same way);
3. optionally delay-embeds the z-scored series (:func:`~pitsolve.dsr.embedding.delay_embed`),
   which drops the first :math:`(d-1)\tau` rows;
4. sizes the held-out tail: of the :math:`n` rows left, the last :math:`2 n_e` are held out
   (validation, then test), :math:`n_e = \max(250, \lfloor n/12 \rfloor)`, and the rest train.

A series is too short unless :data:`MIN_STEPS` rows remain after the embedding.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from .embedding import delay_embed, rows_lost

__all__ = ["MIN_STEPS", "PreparedSeries", "held_out_length", "prepare_series"]

MIN_STEPS = 1000
"""The fewest rows a series may have after delay embedding (training plus held-out tail)."""


def held_out_length(n: int) -> int:
    r""":math:`n_e = \max(250, \lfloor n/12 \rfloor)`: the length of the validation and of the
    test series held out at the end of an ``n``-step measured series."""
    return max(250, int(n) // 12)


@dataclasses.dataclass(frozen=True)
class PreparedSeries:
    """A series ready for training.

    Attributes
    ----------
    x : ``(n, N·d)`` z-scored (and delay-embedded) series; its last ``2 * n_eval`` rows are
        held out.
    n_eval : length of the validation and of the test series.
    mean, std : per column of the series as read (before embedding), for scaling test data.
    embed : ``(dim, lag)`` of the delay embedding, or None.
    """

    x: np.ndarray
    n_eval: int
    mean: np.ndarray
    std: np.ndarray
    embed: tuple[int, int] | None


def prepare_series(x: Any, *, name: str = "data",
                   embed: tuple[int, int] | None = None) -> PreparedSeries:
    """Check, z-score and optionally delay-embed ``x`` ``(T, N)`` (steps above).

    Parameters
    ----------
    x : the series as read, finite.
    name : what to call it in errors (the file name).
    embed : ``(dim, lag)`` of a delay embedding, or None.

    Raises
    ------
    ValueError
        For a constant column (naming its index), or a series shorter than
        :data:`MIN_STEPS` rows after the embedding (stating the minimum), or a bad embedding.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ValueError(f"{name}: a series must have shape (T, N), got {x.shape}")
    T, N = x.shape
    std = x.std(axis=0)
    constant = [n for n in range(N) if not np.ptp(x[:, n]) > 0]
    if constant:
        n = constant[0]
        raise ValueError(
            f"{name}: column {n + 1} (index {n}) is constant ({x[0, n]:g}): it carries no "
            f"dynamics and cannot be z-scored; drop it"
            + (f" (also constant: indices {constant[1:]})" if len(constant) > 1 else ""))
    lost = 0 if embed is None else rows_lost(*embed)
    need = MIN_STEPS + lost
    if T < need:
        how = (f"{MIN_STEPS} rows after the delay embedding {embed[0]},{embed[1]}, which "
               f"drops the first {lost}; " if lost else "")
        raise ValueError(
            f"{name}: {T} time steps are too few: need at least {need} ({how}the last "
            f"2·max(250, ⌊n/12⌋) of the n rows are held out for validation and test)")
    mean = x.mean(axis=0)
    z = (x - mean) / std
    if embed is not None:
        z = delay_embed(z, *embed)
    return PreparedSeries(x=z, n_eval=held_out_length(len(z)), mean=mean, std=std,
                          embed=None if embed is None else (int(embed[0]), int(embed[1])))
