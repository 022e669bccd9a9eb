r"""Measures of dynamical-systems reconstruction quality (MATH.md §9).

================================  ======================================================
function                          computes
================================  ======================================================
:func:`state_space_divergence`    :math:`D_{\mathrm{stsp}} = \mathrm{KL}(p_{\mathrm{true}}
                                  \,\|\, p_{\mathrm{gen}})` of the state-space occupation
:func:`power_spectrum_distance`   :math:`D_H`, Hellinger distance of smoothed power spectra
:func:`prediction_error`          :math:`\mathrm{PE}(n)`, the n-step-ahead MSE
================================  ======================================================

The defaults are the reference definitions (DurstewitzLab's Julia code); published variants
that give different numbers are available only through an explicit ``compat=`` option, since
the measures are not comparable across implementations otherwise. A diverged generated
trajectory (NaN or Inf) gives NaN, never an exception; malformed arguments raise
``ValueError`` naming the argument. Everything runs on NumPy (CuPy inputs are copied to the
host).

The maximal Lyapunov exponent, the fourth measure of the evaluation protocol, is computed in
:mod:`pitsolve.dsr.lyapunov`; :func:`~pitsolve.dsr.lyapunov.max_lyapunov`,
:func:`~pitsolve.dsr.lyapunov.max_lyapunov_flow` and
:class:`~pitsolve.dsr.lyapunov.LyapunovResult` remain importable from here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.ndimage import gaussian_filter1d

from .._validation import as_float_array, check_positive_int
from ._inputs import CHUNK_ELEMENTS, autonomous, host, positive_float
from .lyapunov import LyapunovResult, max_lyapunov, max_lyapunov_flow

__all__ = [
    "LyapunovResult",
    "max_lyapunov",
    "max_lyapunov_flow",
    "power_spectrum_distance",
    "prediction_error",
    "state_space_divergence",
]

_STSP_COMPAT = ("minmax", "python-binning", "symmetric")
_PSD_COMPAT = ("dysts",)
_METHODS = ("auto", "binning", "gmm")
_GMM_MIN_DIM = 6  # auto: binning below, GMM from here on


# -- input checks ----------------------------------------------------------------------------
def _series(x: Any, name: str, *, min_len: int = 1) -> np.ndarray:
    """``x`` as a float ``(T, N)`` NumPy array with ``T ≥ min_len`` (``ValueError`` else)."""
    x = np.asarray(as_float_array(host(x), name))
    if x.ndim != 2:
        raise ValueError(f"{name} must have shape (T, N), got shape {x.shape}")
    if x.shape[1] < 1:
        raise ValueError(f"{name} must have at least one dimension (N ≥ 1), got {x.shape}")
    if x.shape[0] < min_len:
        raise ValueError(f"{name} must have at least {min_len} time steps, got {x.shape[0]}")
    return x


def _pair(x_true: Any, x_gen: Any, *, min_len: int) -> tuple[np.ndarray, np.ndarray]:
    xt = _series(x_true, "x_true", min_len=min_len)
    xg = _series(x_gen, "x_gen", min_len=min_len)
    if xt.shape[1] != xg.shape[1]:
        raise ValueError(
            f"x_gen must have the dimension of x_true (N = {xt.shape[1]}), got {xg.shape[1]}"
        )
    if not np.isfinite(xt).all():
        raise ValueError("x_true contains non-finite values (NaN or Inf)")
    return xt, xg


def _compat(compat: str | Sequence[str] | None, allowed: tuple[str, ...]) -> frozenset[str]:
    """The set of compatibility options (a string, a sequence of strings, or None)."""
    if compat is None:
        return frozenset()
    opts = [compat] if isinstance(compat, str) else list(compat)
    for o in opts:
        if o not in allowed:
            raise ValueError(f"compat must be None or one of {list(allowed)}, got {o!r}")
    return frozenset(opts)


# -- D_stsp ----------------------------------------------------------------------------------
def state_space_divergence(
    x_true: Any,
    x_gen: Any,
    *,
    method: str = "auto",
    n_bins: int = 30,
    smoothing: float = 1e-5,
    n_samples: int = 1000,
    sigma2: float = 1.0,
    max_points: int = 10_000,
    seed: int = 0,
    compat: str | Sequence[str] | None = None,
) -> float:
    r""":math:`D_{\mathrm{stsp}} = \sum_c \hat p_{\mathrm{true}}(c)
    \log\frac{\hat p_{\mathrm{true}}(c)}{\hat p_{\mathrm{gen}}(c)}` (binning) or
    :math:`\frac1S\sum_s \log\frac{p(s)}{q(s)}` (Gaussian mixtures).

    **Binning** (``method="auto"`` for N < 6): every dimension k is cut into ``n_bins``
    equal bins over :math:`[\min_k - 0.1\sigma_k,\ \max_k + 0.1\sigma_k]` of the *true* data
    (:math:`\sigma_k` the sample standard deviation, ``ddof=1``). Bins are those of
    ``numpy.histogramdd`` on these edges (half-open, the last one closed); points outside
    the range are dropped. With :math:`K = n_{\mathrm{bins}}^N` cells, counts :math:`h(c)`
    and :math:`\alpha` = ``smoothing``,
    :math:`\hat p(c) = (h(c) + \alpha)/(\sum_c h(c) + \alpha K)`. The histogram is sparse:
    the cells occupied by either set are summed explicitly and the :math:`K - m` cells empty
    in both add :math:`(K - m)\, a_t \log(a_t/a_g)` with
    :math:`a = \alpha/(\sum h + \alpha K)`, so N = 5 (24 million cells) costs no more than
    N = 2.

    **Gaussian mixtures** (``method="auto"`` for N ≥ 6): with :math:`X` and :math:`Y` the
    first ``max_points`` points of the true and generated data, ``n_samples`` samples
    :math:`s = X_t + \sigma\varepsilon` (:math:`t` uniform, :math:`\varepsilon\sim N(0, I)`,
    :math:`\sigma^2` = ``sigma2``) from
    :math:`p(s) = \frac1{|X|}\sum_j N(s; X_j, \sigma^2 I)`, and
    :math:`q(s) = \frac1{|Y|}\sum_j N(s; Y_j, \sigma^2 I)`. Densities are evaluated as
    log-sum-exps (chunked, so memory stays bounded), so they do not underflow; a sample is
    dropped only where :math:`\log p` or :math:`\log q` is not finite.

    Parameters
    ----------
    x_true, x_gen : ``(T, N)`` and ``(T', N)`` arrays (lengths may differ).
    method : ``"auto"``, ``"binning"`` or ``"gmm"``.
    n_bins : bins per dimension (binning).
    smoothing : the Laplace pseudo-count :math:`\alpha > 0` (binning).
    n_samples : Monte-Carlo samples (GMM).
    sigma2 : the mixtures' component variance :math:`\sigma^2` (GMM).
    max_points : points of each data set used as mixture components (GMM).
    seed : seed of ``numpy.random.default_rng`` for the samples (GMM): ``n_samples``
        indices ``rng.integers(0, |X|)`` are drawn first, then ``rng.standard_normal((S, N))``
        (and, with ``"symmetric"``, the same again for the samples from q).
    compat : None, or one or a sequence of

        - ``"minmax"``: binning over :math:`[\min_k, \max_k]` with no margin.
        - ``"python-binning"``: the Python variant that loses the first bin. The cell of a
          point is :math:`c_k = \lfloor n_{\mathrm{bins}} (x_k - lo_k)/(hi_k - lo_k)\rfloor`
          and a point is kept only if :math:`0 < c_k < n_{\mathrm{bins}}` in every
          dimension: points in the first bin of any dimension (and points exactly on the
          upper edge) are discarded, from both data sets, while the normalisation still
          counts all :math:`n_{\mathrm{bins}}^N` cells.
        - ``"symmetric"``: :math:`\tfrac12(\mathrm{KL}(p\|q) + \mathrm{KL}(q\|p))`, for
          binning and GMM (the second term uses samples from q).

    Returns
    -------
    float : :math:`D_{\mathrm{stsp}} \ge 0` up to Monte-Carlo error; NaN if ``x_gen``
    contains a non-finite value (a diverged model), or, for binning, if no generated point
    (with ``"python-binning"``: no generated or no true point) falls inside the range.

    Raises
    ------
    ValueError : malformed arrays, non-finite ``x_true``, a constant dimension of ``x_true``
        (binning), an unknown ``method`` or ``compat``, or a binning-only ``compat`` option
        with GMM.
    """
    xt, xg = _pair(x_true, x_gen, min_len=1)
    opts = _compat(compat, _STSP_COMPAT)
    if method not in _METHODS:
        raise ValueError(f"method must be one of {list(_METHODS)}, got {method!r}")
    N = xt.shape[1]
    if method == "auto":
        method = "binning" if N < _GMM_MIN_DIM else "gmm"
    if method == "binning":
        n_bins = check_positive_int(n_bins, "n_bins")
        alpha = positive_float(smoothing, "smoothing")
        if xt.shape[0] < 2:
            raise ValueError(f"x_true must have at least 2 time steps, got {xt.shape[0]}")
        if not np.isfinite(xg).all():
            return math.nan
        return _binning_divergence(xt, xg, n_bins, alpha, opts)
    binning_only = sorted(opts & {"minmax", "python-binning"})
    if binning_only:
        raise ValueError(f"compat {binning_only} applies to method='binning' only")
    n_samples = check_positive_int(n_samples, "n_samples")
    max_points = check_positive_int(max_points, "max_points")
    s2 = positive_float(sigma2, "sigma2")
    if not np.isfinite(xg).all():
        return math.nan
    return _gmm_divergence(
        xt[:max_points], xg[:max_points], n_samples, s2, seed, "symmetric" in opts
    )


def _bin_range(xt: np.ndarray, margin: bool) -> tuple[np.ndarray, np.ndarray]:
    lo, hi = xt.min(axis=0), xt.max(axis=0)
    if margin:
        s = xt.std(axis=0, ddof=1)
        lo, hi = lo - 0.1 * s, hi + 0.1 * s
    flat = np.flatnonzero(~(hi > lo))
    if flat.size:
        raise ValueError(f"x_true is constant along dimension {int(flat[0])}: cannot bin it")
    return lo, hi


def _cells(x: np.ndarray, lo: np.ndarray, hi: np.ndarray, n_bins: int, python: bool) -> np.ndarray:
    """The integer cell coordinates ``(n_kept, N)`` of the points that fall inside."""
    if python:
        c = np.floor(n_bins * (x - lo) / (hi - lo))
        keep = ((c > 0) & (c < n_bins)).all(axis=1)
        return c[keep].astype(np.int64)
    keep = ((x >= lo) & (x <= hi)).all(axis=1)
    x = x[keep]
    c = np.empty(x.shape, dtype=np.int64)
    for k in range(x.shape[1]):
        edges = np.linspace(lo[k], hi[k], n_bins + 1)
        ck = np.searchsorted(edges, x[:, k], side="right") - 1
        ck[x[:, k] == edges[-1]] = n_bins - 1  # the last bin is closed, as in histogramdd
        c[:, k] = ck
    return c


def _sparse_counts(ct: np.ndarray, cg: np.ndarray, n_bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Counts of true and generated points in every cell occupied by either set."""
    N = ct.shape[1]
    n_t = ct.shape[0]
    if n_bins**N <= 2**62:
        strides = np.array([n_bins**k for k in range(N)], dtype=np.int64)
        keys = np.concatenate([ct, cg]) @ strides
        _, inv = np.unique(keys, return_inverse=True)
    else:  # the flat index would overflow int64: unique rows instead
        _, inv = np.unique(np.concatenate([ct, cg]), axis=0, return_inverse=True)
    inv = inv.ravel()
    m = int(inv.max()) + 1 if inv.size else 0
    return np.bincount(inv[:n_t], minlength=m), np.bincount(inv[n_t:], minlength=m)


def _smoothed_kl(h_p: np.ndarray, h_q: np.ndarray, n_cells: int, alpha: float) -> float:
    r""":math:`\sum_c \hat p \log(\hat p/\hat q)` over all ``n_cells`` cells, of which only the
    occupied ones are listed in ``h_p``, ``h_q``."""
    zp = h_p.sum() + alpha * n_cells
    zq = h_q.sum() + alpha * n_cells
    p = (h_p + alpha) / zp
    q = (h_q + alpha) / zq
    a_p, a_q = alpha / zp, alpha / zq
    empty = float(n_cells - h_p.size)
    return float(np.sum(p * np.log(p / q)) + empty * a_p * math.log(a_p / a_q))


def _binning_divergence(
    xt: np.ndarray, xg: np.ndarray, n_bins: int, alpha: float, opts: frozenset[str]
) -> float:
    lo, hi = _bin_range(xt, margin="minmax" not in opts)
    python = "python-binning" in opts
    ct = _cells(xt, lo, hi, n_bins, python)
    cg = _cells(xg, lo, hi, n_bins, python)
    if cg.shape[0] == 0 or ct.shape[0] == 0:
        return math.nan
    h_t, h_g = _sparse_counts(ct, cg, n_bins)
    n_cells = n_bins ** xt.shape[1]
    d = _smoothed_kl(h_t, h_g, n_cells, alpha)
    if "symmetric" in opts:
        d = 0.5 * (d + _smoothed_kl(h_g, h_t, n_cells, alpha))
    return d


def _log_mixture(s: np.ndarray, centres: np.ndarray, sigma2: float) -> np.ndarray:
    r""":math:`\log \frac1n\sum_j N(s_i; c_j, \sigma^2 I)` for every row :math:`s_i`, as
    :math:`m_i + \log\sum_j e^{a_{ij} - m_i}` with :math:`a_{ij} = -|s_i - c_j|^2/2\sigma^2`,
    :math:`m_i = \max_j a_{ij}` (no underflow: the largest term is 1)."""
    n, N = centres.shape
    cc = np.einsum("ij,ij->i", centres, centres)
    out = np.empty(s.shape[0])
    step = max(1, CHUNK_ELEMENTS // n)
    for i in range(0, s.shape[0], step):
        b = s[i : i + step]
        a = b @ centres.T  # a = −(|b|² + |c|² − 2 b·c)/2σ², built in place
        a *= 2.0
        a -= cc[None, :]
        a -= np.einsum("ij,ij->i", b, b)[:, None]
        np.minimum(a, 0.0, out=a)  # round-off can make tiny squared distances negative
        a *= 0.5 / sigma2
        m = a.max(axis=1, keepdims=True)
        a -= m
        np.exp(a, out=a)
        out[i : i + step] = np.log(a.sum(axis=1)) + m[:, 0]
    return out - math.log(n) - 0.5 * N * math.log(2 * math.pi * sigma2)


def _gmm_kl(
    X: np.ndarray, Y: np.ndarray, n_samples: int, sigma2: float, rng: np.random.Generator
) -> float:
    idx = rng.integers(0, X.shape[0], size=n_samples)
    s = X[idx] + math.sqrt(sigma2) * rng.standard_normal((n_samples, X.shape[1]))
    lp = _log_mixture(s, X, sigma2)
    lq = _log_mixture(s, Y, sigma2)
    ok = np.isfinite(lp) & np.isfinite(lq)
    return float(np.mean(lp[ok] - lq[ok])) if ok.any() else math.nan


def _gmm_divergence(
    xt: np.ndarray, xg: np.ndarray, n_samples: int, sigma2: float, seed: int, symmetric: bool
) -> float:
    # centre on the true mean: the distance expansion |s|² + |c|² − 2 s·c loses digits far
    # from the origin
    mu = xt.mean(axis=0)
    X = (xt - mu).astype(np.float64)
    Y = (xg - mu).astype(np.float64)
    rng = np.random.default_rng(seed)
    d = _gmm_kl(X, Y, n_samples, sigma2, rng)
    if symmetric:
        d = 0.5 * (d + _gmm_kl(Y, X, n_samples, sigma2, rng))
    return d


# -- D_H -------------------------------------------------------------------------------------
def power_spectrum_distance(
    x_true: Any,
    x_gen: Any,
    *,
    smoothing: float = 20.0,
    compat: str | Sequence[str] | None = None,
) -> float:
    r""":math:`D_H = \frac1N\sum_{k=1}^N \sqrt{1 - \sum_f \sqrt{p_k(f)\, q_k(f)}}`, the mean
    Hellinger distance of the normalised, smoothed power spectra.

    Per dimension k each series is z-scored, its power spectrum
    :math:`|\mathrm{rfft}(z)|^2` (all :math:`\lfloor T/2\rfloor + 1` frequencies) is smoothed
    by ``scipy.ndimage.gaussian_filter1d(ps, sigma=smoothing)`` with that function's
    defaults (``mode="reflect"``, ``truncate=4``), clipped at 0 and normalised to sum 1,
    giving :math:`p_k` (true) and :math:`q_k` (generated). The distance is evaluated as
    :math:`\sqrt{\tfrac12\sum_f (\sqrt{p_k} - \sqrt{q_k})^2}`, which equals the formula
    above for normalised spectra but has no cancellation (identical spectra give exactly 0,
    where :math:`1 - \sum_f p_k` would leave a round-off of order :math:`10^{-16}` and a
    distance of order :math:`10^{-8}`); the argument is clipped to [0, 1].

    Parameters
    ----------
    x_true, x_gen : ``(T, N)`` arrays of equal shape.
    smoothing : the Gaussian width in frequency bins (0: no smoothing).
    compat : ``"dysts"``: unsmoothed spectra (as dysts computes its spectral Hellinger
        distance), i.e. ``smoothing`` is taken as 0.

    Returns
    -------
    float in [0, 1]; NaN if ``x_gen`` contains a non-finite value. A constant generated
    dimension (a model collapsed onto a fixed point) has no power spectrum and counts as the
    maximal distance 1 in that dimension.

    Raises
    ------
    ValueError : unequal shapes, fewer than 2 time steps, non-finite or constant ``x_true``,
        negative ``smoothing``, unknown ``compat``.
    """
    xt, xg = _pair(x_true, x_gen, min_len=2)
    if xt.shape[0] != xg.shape[0]:
        raise ValueError(
            f"x_gen must have the length of x_true (T = {xt.shape[0]}), got {xg.shape[0]}"
        )
    opts = _compat(compat, _PSD_COMPAT)
    sm = float(smoothing)
    if not math.isfinite(sm) or sm < 0:
        raise ValueError(f"smoothing must be a finite number ≥ 0, got {smoothing!r}")
    if "dysts" in opts:
        sm = 0.0
    flat = np.flatnonzero(np.ptp(xt, axis=0) == 0)
    if flat.size:
        raise ValueError(f"x_true is constant along dimension {int(flat[0])}: no spectrum")
    if not np.isfinite(xg).all():
        return math.nan
    p, _ = _spectra(xt, sm)
    q, constant = _spectra(xg, sm)
    # ½ Σ (√p − √q)² = 1 − Σ √(pq) for normalised p, q, without the cancellation near 0
    d = np.sqrt(np.clip(0.5 * np.sum((np.sqrt(p) - np.sqrt(q)) ** 2, axis=0), 0.0, 1.0))
    d[constant] = 1.0
    return float(np.mean(d))


def _spectra(x: np.ndarray, smoothing: float) -> tuple[np.ndarray, np.ndarray]:
    """Normalised smoothed spectra ``(F, N)`` and the mask of constant dimensions."""
    x = x.astype(np.float64)
    constant = np.ptp(x, axis=0) == 0
    std = np.where(constant, 1.0, x.std(axis=0))
    z = (x - x.mean(axis=0)) / std
    z[:, constant] = 0.0  # exactly: the mean of equal numbers may round
    ps = np.abs(np.fft.rfft(z, axis=0)) ** 2
    if smoothing > 0:
        ps = gaussian_filter1d(ps, smoothing, axis=0)
    np.maximum(ps, 0.0, out=ps)
    total = ps.sum(axis=0)
    ps /= np.where(total > 0, total, 1.0)
    return ps, constant | (total <= 0)


# -- PE(n) -----------------------------------------------------------------------------------
def prediction_error(
    model: Any, x: Any, n: int = 20, *, observed: Sequence[int] | None = None
) -> float:
    r""":math:`\mathrm{PE}(n) = \frac{1}{(T-n) N}\sum_{t=0}^{T-n-1}
    \lVert (f^{n}(h_t))_{\mathcal O} - x_{t+n}\rVert^2`, with :math:`h_t = [x_t; 0]`.

    From every test point :math:`x_t` the latent state is initialised with the observed units
    :math:`\mathcal O` set to :math:`x_t` and the others to 0 (an identity observation), the
    model is iterated n steps (one batched ``model.f`` call per step over all t), and the
    observed units are compared with :math:`x_{t+n}`.

    Parameters
    ----------
    model : an autonomous model (``model.f(h)``, ``model.state_dim`` = M ≥ N).
    x : ``(T, N)`` or ``(B, T, N)`` test data (with B series, the mean over all of them).
    n : the prediction horizon, ``1 ≤ n < T``.
    observed : the N latent indices identified with the data dimensions (default: the
        first N).

    Returns
    -------
    float : the mean squared error; NaN if the predictions diverge (non-finite).
    """
    x = np.asarray(as_float_array(host(x), "x"))
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"x must have shape (T, N) or (B, T, N), got shape {x.shape}")
    n = check_positive_int(n, "n")
    B, T, N = x.shape
    if T <= n:
        raise ValueError(f"x must have more than n = {n} time steps, got {T}")
    if not np.isfinite(x).all():
        raise ValueError("x contains non-finite values (NaN or Inf)")
    M = autonomous(model)
    idx = _observed_indices(observed, N, M)
    dtype = np.dtype(getattr(model, "dtype", x.dtype))
    h = np.zeros((B, T - n, M), dtype=dtype)
    h[..., idx] = x[:, : T - n]
    h = h.reshape(-1, M)
    with np.errstate(all="ignore"):  # a diverging model is reported as NaN
        for _ in range(n):
            h = np.asarray(host(model.f(h)))
        err = h[:, idx].reshape(B, T - n, N).astype(np.float64) - x[:, n:]
        mse = float(np.mean(err * err))
    return mse if math.isfinite(mse) else math.nan


def _observed_indices(observed: Sequence[int] | None, N: int, M: int) -> np.ndarray:
    if observed is None:
        if N > M:
            raise ValueError(f"x has N = {N} dimensions, more than model.state_dim = {M}")
        return np.arange(N)
    idx = np.asarray(observed)
    if idx.ndim != 1 or idx.dtype.kind not in "iu" or idx.shape[0] != N:
        raise ValueError(f"observed must be {N} integer indices (one per data dimension)")
    if np.unique(idx).size != N or idx.min() < 0 or idx.max() >= M:
        raise ValueError(f"observed must be distinct indices in [0, {M}), got {idx.tolist()}")
    return idx.astype(np.intp)
