"""DSR measures (MATH.md §9) against independent implementations written here from the
definitions: dense histograms, plain loops over points and samples, explicit FFTs."""

import math
from collections import Counter

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from pitsolve.dsr.metrics import (
    LyapunovResult,
    max_lyapunov,
    max_lyapunov_flow,
    power_spectrum_distance,
    prediction_error,
    state_space_divergence,
)
from pitsolve.models import Lorenz63, Model, ODEStep, Params, ShPLRNN

LORENZ_LAMBDA = 0.906


# -- references ------------------------------------------------------------------------------
def _edges(xt, n_bins, margin=True):
    lo, hi = xt.min(0), xt.max(0)
    if margin:
        s = xt.std(0, ddof=1)
        lo, hi = lo - 0.1 * s, hi + 0.1 * s
    return lo, hi


def dense_kl(xt, xg, n_bins=30, alpha=1e-5, margin=True, symmetric=False):
    """D_stsp from dense numpy.histogramdd histograms over all bins^N cells."""
    lo, hi = _edges(xt, n_bins, margin)
    edges = [np.linspace(lo[k], hi[k], n_bins + 1) for k in range(xt.shape[1])]
    ht, _ = np.histogramdd(xt, bins=edges)
    hg, _ = np.histogramdd(xg, bins=edges)
    return _dense_from_hists(ht, hg, alpha, symmetric)


def _dense_from_hists(ht, hg, alpha, symmetric=False):
    if hg.sum() == 0:
        return math.nan
    K = ht.size
    p = (ht + alpha) / (ht.sum() + alpha * K)
    q = (hg + alpha) / (hg.sum() + alpha * K)
    kl = float(np.sum(p * np.log(p / q)))
    if symmetric:
        kl = 0.5 * (kl + float(np.sum(q * np.log(q / p))))
    return kl


def python_binning_kl(xt, xg, n_bins=30, alpha=1e-5):
    """The first-bin-dropping variant, point by point into a dense array."""
    lo, hi = _edges(xt, n_bins)
    hists = []
    for x in (xt, xg):
        h = np.zeros((n_bins,) * x.shape[1])
        for point in x:
            c = [
                math.floor(n_bins * (v - a) / (b - a))
                for v, a, b in zip(point, lo, hi, strict=True)
            ]
            if all(0 < ci < n_bins for ci in c):
                h[tuple(c)] += 1
        hists.append(h)
    return _dense_from_hists(*hists, alpha)


def dict_kl(xt, xg, n_bins, alpha=1e-5):
    """Binning D_stsp with dict counts and the empty-cell term written out (huge K)."""
    lo, hi = _edges(xt, n_bins)
    counts = []
    for x in (xt, xg):
        c = Counter()
        for point in x:
            cell = []
            for v, a, b in zip(point, lo, hi, strict=True):
                e = np.linspace(a, b, n_bins + 1)
                cell.append(min(int(np.searchsorted(e, v, side="right")) - 1, n_bins - 1))
            c[tuple(cell)] += 1
        counts.append(c)
    ct, cg = counts
    K = n_bins ** xt.shape[1]
    zt, zg = sum(ct.values()) + alpha * K, sum(cg.values()) + alpha * K
    cells = set(ct) | set(cg)
    total = 0.0
    for cell in cells:
        p, q = (ct[cell] + alpha) / zt, (cg[cell] + alpha) / zg
        total += p * math.log(p / q)
    at, ag = alpha / zt, alpha / zg
    return total + (K - len(cells)) * at * math.log(at / ag)


def gmm_kl(xt, xg, n_samples, sigma2, seed, symmetric=False):
    """Monte-Carlo KL of isotropic Gaussian mixtures with explicit exp (small data only)."""
    rng = np.random.default_rng(seed)

    def density(s, centres):
        N = centres.shape[1]
        tot = 0.0
        for c in centres:
            tot += math.exp(-np.sum((s - c) ** 2) / (2 * sigma2))
        return tot / len(centres) / (2 * math.pi * sigma2) ** (N / 2)

    def kl(X, Y):
        idx = rng.integers(0, X.shape[0], size=n_samples)
        eps = rng.standard_normal((n_samples, X.shape[1]))
        vals = []
        for i in range(n_samples):
            s = X[idx[i]] + math.sqrt(sigma2) * eps[i]
            vals.append(math.log(density(s, X)) - math.log(density(s, Y)))
        return float(np.mean(vals))

    d = kl(xt, xg)
    return 0.5 * (d + kl(xg, xt)) if symmetric else d


def hellinger_reference(xt, xg, smoothing=20.0):
    """Per-dimension loop, full FFT, Hellinger as sqrt(1 − Σ √(p q)) clipped at 0."""
    T = xt.shape[0]
    out = []
    for k in range(xt.shape[1]):
        spectra = []
        for x in (xt[:, k], xg[:, k]):
            z = (x - x.mean()) / x.std()
            ps = np.abs(np.fft.fft(z)[: T // 2 + 1]) ** 2
            if smoothing:
                ps = gaussian_filter1d(ps, smoothing)
            ps = np.clip(ps, 0, None)
            spectra.append(ps / ps.sum())
        p, q = spectra
        out.append(math.sqrt(max(0.0, 1.0 - np.sum(np.sqrt(p * q)))))
    return float(np.mean(out))


def linear_model(a, h1, hidden=2):
    """ShPLRNN with W1 = 0: f(z) = a ⊙ z + h1."""
    M = len(a)
    return ShPLRNN.from_params(
        {
            "a": np.asarray(a, float),
            "W1": np.zeros((M, hidden)),
            "W2": np.ones((hidden, M)),
            "h1": np.asarray(h1, float),
            "h2": np.zeros(hidden),
        }
    )


class DiagonalLinear(Model):
    """f(h) = a ⊙ h with a diagonal Jacobian structure."""

    jacobian_structure = "diagonal"

    def __init__(self, a):
        super().__init__(Params(a=np.asarray(a, float)), state_dim=len(a))

    def f(self, h, x=None):
        return self.params["a"] * h

    def jacobian(self, h, x=None):
        return np.broadcast_to(self.params["a"], h.shape).copy()


@pytest.fixture(scope="module")
def lorenz():
    x = ODEStep(Lorenz63(), dt=0.01).sequential(np.array([1.0, 1.0, 1.0]), None, 6000)
    return x[1000:]


# -- D_stsp, binning -------------------------------------------------------------------------
@pytest.mark.parametrize("method,N", [("binning", 1), ("binning", 3), ("gmm", 6), ("auto", 7)])
def test_stsp_identical_is_zero(method, N):
    x = np.random.default_rng(N).normal(size=(500, N))
    assert state_space_divergence(x, x, method=method) == 0.0


@pytest.mark.parametrize("N", [2, 3])
@pytest.mark.parametrize("compat", [None, "minmax", "symmetric"])
def test_stsp_binning_matches_dense_histogram(N, compat):
    rng = np.random.default_rng(N)
    xt = rng.normal(size=(3000, N))
    xg = 1.3 * rng.normal(size=(2000, N)) + 0.2
    got = state_space_divergence(xt, xg, compat=compat)
    want = dense_kl(xt, xg, margin=compat != "minmax", symmetric=compat == "symmetric")
    assert got == pytest.approx(want, rel=1e-10)
    assert got > 0


def test_stsp_empty_cell_term_dominant_case():
    # N = 5, 10 bins: 10^5 cells, almost all empty in both sets
    rng = np.random.default_rng(0)
    xt = rng.normal(size=(400, 5))
    xg = rng.normal(size=(100, 5)) * 0.7
    got = state_space_divergence(xt, xg, n_bins=10)
    assert got == pytest.approx(dense_kl(xt, xg, n_bins=10), rel=1e-10)
    assert got == pytest.approx(dict_kl(xt, xg, n_bins=10), rel=1e-10)


def test_stsp_empty_cell_term_by_hand():
    # N = 1, 3 bins over [0 - 0.1σ, 2 + 0.1σ]: true counts (2, 0, 2), generated (1, 0, 3)
    xt = np.array([[0.0], [0.1], [1.9], [2.0]])
    xg = np.array([[0.05], [1.95], [1.99], [2.0]])
    a = 1e-5
    p = np.array([2 + a, a, 2 + a]) / (4 + 3 * a)
    q = np.array([1 + a, a, 3 + a]) / (4 + 3 * a)
    want = float(np.sum(p * np.log(p / q)))
    assert state_space_divergence(xt, xg, n_bins=3) == pytest.approx(want, rel=1e-12)
    # with different totals, the empty bin contributes a log(a_t / a_g) ≠ 0
    xg5 = np.vstack([xg, [[0.0]]])
    q5 = np.array([2 + a, a, 3 + a]) / (5 + 3 * a)
    want5 = float(np.sum(p * np.log(p / q5)))
    assert p[1] * math.log(p[1] / q5[1]) != 0
    assert state_space_divergence(xt, xg5, n_bins=3) == pytest.approx(want5, rel=1e-12)


def test_stsp_huge_cell_count_uses_row_keys():
    # 30^13 cells overflow an int64 flat index: the row-wise path must agree with a dict count
    rng = np.random.default_rng(1)
    xt = rng.normal(size=(60, 13))
    xg = np.vstack([xt[:30], rng.normal(size=(20, 13))])
    got = state_space_divergence(xt, xg, method="binning")
    assert got == pytest.approx(dict_kl(xt, xg, n_bins=30), rel=1e-10)


def test_stsp_points_outside_are_dropped(lorenz):
    xg = lorenz[::-1][:3000] * 1.05
    base = state_space_divergence(lorenz, xg)
    outliers = np.array([[1e3, 0.0, 0.0], [0.0, -1e3, 0.0], [0.0, 0.0, 1e4]])
    assert state_space_divergence(lorenz, np.vstack([xg, outliers])) == base
    assert base == pytest.approx(dense_kl(lorenz, xg), rel=1e-10)


def test_stsp_nan_without_generated_points_inside(lorenz):
    assert math.isnan(state_space_divergence(lorenz, lorenz + 1e3))


@pytest.mark.parametrize("method", ["binning", "gmm"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_stsp_diverged_generated_data_is_nan(method, bad):
    rng = np.random.default_rng(0)
    xt = rng.normal(size=(300, 3))
    xg = rng.normal(size=(300, 3))
    assert math.isfinite(state_space_divergence(xt, xg, method=method))
    xg[150:, 1] = bad
    assert math.isnan(state_space_divergence(xt, xg, method=method))


def test_stsp_python_binning_matches_loop_reference():
    rng = np.random.default_rng(3)
    xt = rng.normal(size=(800, 2))
    xg = rng.normal(size=(600, 2)) + 0.3
    got = state_space_divergence(xt, xg, n_bins=12, compat="python-binning")
    assert got == pytest.approx(python_binning_kl(xt, xg, n_bins=12), rel=1e-10)
    assert got != pytest.approx(state_space_divergence(xt, xg, n_bins=12), rel=1e-6)


def test_stsp_python_binning_discards_the_first_bin():
    xt = np.linspace(0.0, 1.0, 101)[:, None]
    lo, hi = _edges(xt, 10)
    first_bin = lo + (hi - lo) * np.array([[0.01], [0.05], [0.09]])
    assert math.isfinite(state_space_divergence(xt, first_bin, n_bins=10))
    assert math.isnan(state_space_divergence(xt, first_bin, n_bins=10, compat="python-binning"))


def test_stsp_compat_combinations():
    rng = np.random.default_rng(4)
    xt, xg = rng.normal(size=(500, 2)), rng.normal(size=(500, 2)) * 1.2
    sym = state_space_divergence(xt, xg, compat=("minmax", "symmetric"))
    assert sym == pytest.approx(dense_kl(xt, xg, margin=False, symmetric=True), rel=1e-10)
    both = state_space_divergence(xt, xg, n_bins=8, compat=("python-binning", "symmetric"))
    assert both > 0 and both != state_space_divergence(xt, xg, n_bins=8, compat="symmetric")


# -- D_stsp, GMM -----------------------------------------------------------------------------
@pytest.mark.parametrize("symmetric", [False, True])
def test_gmm_matches_direct_implementation(symmetric):
    rng = np.random.default_rng(5)
    xt = rng.normal(size=(50, 6))
    xg = rng.normal(size=(40, 6)) * 0.8 + 0.3
    kw = {"n_samples": 100, "sigma2": 1.0, "seed": 7}
    got = state_space_divergence(
        xt, xg, method="gmm", compat="symmetric" if symmetric else None, **kw
    )
    assert got == pytest.approx(gmm_kl(xt, xg, symmetric=symmetric, **kw), rel=1e-9)


def test_gmm_sigma2_and_max_points():
    rng = np.random.default_rng(6)
    xt, xg = rng.normal(size=(60, 6)), rng.normal(size=(70, 6)) + 0.5
    got = state_space_divergence(xt, xg, method="gmm", sigma2=0.3, n_samples=50, max_points=30)
    want = gmm_kl(xt[:30], xg[:30], n_samples=50, sigma2=0.3, seed=0)
    assert got == pytest.approx(want, rel=1e-9)


def test_gmm_grows_with_shift():
    rng = np.random.default_rng(7)
    xt = rng.normal(size=(1000, 6))
    d = [state_space_divergence(xt, xt + s, method="gmm") for s in (0.25, 0.5, 1.0, 2.0)]
    assert d[0] > 0
    assert np.all(np.diff(d) > 0)


def test_gmm_far_cloud_does_not_underflow():
    # q(s) is below the smallest double for every sample: log-sum-exp keeps it finite
    rng = np.random.default_rng(8)
    xt = rng.normal(size=(200, 6))
    d = state_space_divergence(xt, xt + 100.0, method="gmm")
    assert math.isfinite(d)
    assert d == pytest.approx(6 * 100.0**2 / 2, rel=0.05)


# -- D_H -------------------------------------------------------------------------------------
def _ar_series(T, N, seed):
    rng = np.random.default_rng(seed)
    x = np.zeros((T, N))
    for t in range(1, T):
        x[t] = 0.95 * x[t - 1] + rng.normal(size=N)
    return x


def test_dh_identical_shifted_scaled(lorenz):
    assert power_spectrum_distance(lorenz, lorenz) == 0.0
    assert power_spectrum_distance(lorenz, np.roll(lorenz, 777, axis=0)) < 1e-6
    assert power_spectrum_distance(lorenz, 3.0 * lorenz - 2.0) < 1e-6


def test_dh_different_frequencies_near_one():
    t = np.arange(5000)[:, None]
    a, b = np.sin(2 * np.pi * 0.01 * t), np.sin(2 * np.pi * 0.2 * t)
    assert power_spectrum_distance(a, b) > 0.99


@pytest.mark.parametrize("compat", [None, "dysts"])
def test_dh_matches_reference(compat):
    xt, xg = _ar_series(3001, 3, 0), _ar_series(3001, 3, 1)
    xg[:, 2] = np.sin(0.3 * np.arange(3001)) + 0.1 * xg[:, 2]
    got = power_spectrum_distance(xt, xg, compat=compat)
    want = hellinger_reference(xt, xg, smoothing=0 if compat == "dysts" else 20.0)
    assert got == pytest.approx(want, rel=1e-8)
    assert power_spectrum_distance(xt, xg, smoothing=5.0) == pytest.approx(
        hellinger_reference(xt, xg, smoothing=5.0), rel=1e-8
    )


def test_dh_constant_and_diverged_generated_dimension(lorenz):
    xg = lorenz.copy()
    xg[:, 1] = 4.2
    assert power_spectrum_distance(lorenz, xg) == pytest.approx(1 / 3)
    xg[100, 0] = np.nan
    assert math.isnan(power_spectrum_distance(lorenz, xg))


# -- PE(n) -----------------------------------------------------------------------------------
def _linear_data(a, h1, B=4, T=200, seed=0):
    model = linear_model(a, h1)
    h0 = np.random.default_rng(seed).normal(size=(B, len(a))) * 3
    return model, model.sequential(h0, None, T)


def test_pe_exact_model_is_zero():
    a, h1 = [0.95, -0.9, 0.8], [0.1, 0.2, -0.3]
    model, x = _linear_data(a, h1)
    assert prediction_error(model, x, n=20) < 1e-20
    assert prediction_error(model, x[0], n=5) < 1e-20
    # a latent space larger than the data: the unobserved unit starts at 0
    big = linear_model([*a, 0.5], [*h1, 1.0])
    assert prediction_error(big, x, n=20) < 1e-20
    assert prediction_error(big, x[..., [2, 0]], n=7, observed=[2, 0]) < 1e-20


def test_pe_matches_loop_reference():
    model = ShPLRNN(4, 8, seed=3)
    x = np.random.default_rng(0).normal(size=(30, 3))
    n = 6
    errs = []
    for t in range(30 - n):
        h = np.concatenate([x[t], [0.0]])
        for _ in range(n):
            h = model.f(h[None])[0]
        errs.extend((h[:3] - x[t + n]) ** 2)
    assert prediction_error(model, x, n=n) == pytest.approx(np.mean(errs), rel=1e-12)


def test_pe_perturbed_model_positive_and_increasing():
    a, h1 = [0.95, -0.9, 0.8], [0.1, 0.2, -0.3]
    _, x = _linear_data(a, h1)
    wrong = linear_model([0.97, -0.92, 0.82], [0.12, 0.2, -0.3])
    pe = [prediction_error(wrong, x, n=n) for n in (1, 2, 5, 10, 20)]
    assert pe[0] > 0
    assert np.all(np.diff(pe) > 0)


def test_pe_diverging_model_is_nan():
    model = linear_model([1e200, 1.0], [0.0, 0.0])
    x = np.ones((30, 2))
    assert math.isnan(prediction_error(model, x, n=5))


# -- Lyapunov exponents ----------------------------------------------------------------------
def test_lyapunov_linear_map_exact():
    a = np.array([0.9, -0.5, 0.3])
    r = max_lyapunov(linear_model(a, [0.0, 0.0, 0.0]), T=2000, transient=500)
    assert isinstance(r, LyapunovResult)
    assert r.trajectory_finite and r.per_time is None
    assert r.per_step == pytest.approx(math.log(0.9), rel=1e-12)
    r3 = max_lyapunov(linear_model(a, [0.0, 0.0, 0.0]), T=500, transient=200, k=3, dt=0.5)
    assert np.allclose(r3.exponents, np.log([0.9, 0.5, 0.3]), rtol=1e-10)
    assert r3.per_time == pytest.approx(2 * math.log(0.9))


def test_lyapunov_diagonal_structure_and_renormalisation():
    model = DiagonalLinear([0.7, -1.1, 0.2])
    for every in (1, 7, 50):
        r = max_lyapunov(model, T=300, transient=50, renormalise_every=every)
        assert r.per_step == pytest.approx(math.log(1.1), rel=1e-12)


def test_lyapunov_full_spectrum_sums_to_log_det():
    model = ODEStep(Lorenz63(), dt=0.01)
    h0 = np.array([1.0, 2.0, 20.0])
    r = max_lyapunov(model, h0, T=400, transient=100, k=3)
    states = np.concatenate([h0[None], model.sequential(h0, None, 499)])[100:]
    logdet = np.linalg.slogdet(model.jacobian(states))[1]
    assert np.sum(r.exponents) == pytest.approx(np.mean(logdet), rel=1e-9)
    assert r.exponents[0] > r.exponents[1] > r.exponents[2]


def test_lyapunov_lorenz_model():
    r = max_lyapunov(ODEStep(Lorenz63(), dt=0.01), T=50_000, transient=1_000)
    assert r.per_time == pytest.approx(LORENZ_LAMBDA, rel=0.1)
    assert r.per_step == pytest.approx(r.per_time * 0.01)


def test_lyapunov_flow_lorenz():
    s, rho, b = 10.0, 28.0, 8.0 / 3.0

    def g(v):
        return np.array([s * (v[1] - v[0]), v[0] * (rho - v[2]) - v[1], v[0] * v[1] - b * v[2]])

    def G(v):
        return np.array([[-s, s, 0.0], [rho - v[2], -1.0, -v[0]], [v[1], v[0], -b]])

    r = max_lyapunov_flow(g, G, np.array([1.0, 1.0, 1.0]), 0.01, T=20_000, transient=1_000)
    assert r.trajectory_finite
    assert r.per_time == pytest.approx(LORENZ_LAMBDA, rel=0.1)
    assert r.per_step == pytest.approx(0.01 * r.per_time)


def test_lyapunov_flow_equals_map_of_rk4_step():
    # RK4 of the variational equations is the Jacobian of the RK4 map: same numbers over a
    # horizon too short for round-off to be amplified
    x0 = np.array([1.0, 2.0, 20.0])
    flow = max_lyapunov_flow(Lorenz63(), None, x0, 0.01, T=200, transient=20, k=2)
    step = max_lyapunov(ODEStep(Lorenz63(), dt=0.01), x0, T=200, transient=20, k=2)
    assert np.allclose(flow.exponents, step.exponents, rtol=1e-9)
    assert flow.per_time == pytest.approx(step.per_time, rel=1e-9)


def test_lyapunov_diverged_and_degenerate():
    r = max_lyapunov(linear_model([2.0, 0.5], [0.0, 0.0]), T=2000, transient=0)
    assert not r.trajectory_finite and math.isnan(r.per_step)
    rf = max_lyapunov_flow(lambda v: v**2, lambda v: np.diag(2 * v), np.ones(2), 0.1, T=500)
    assert not rf.trajectory_finite and math.isnan(rf.per_time)
    # a zero Jacobian annihilates every tangent: λ = −∞
    for k in (1, 2):
        z = max_lyapunov(linear_model([0.0, 0.0], [0.5, 0.5]), T=20, transient=3, k=k)
        assert z.trajectory_finite and np.all(z.exponents == -np.inf)


# -- argument checks -------------------------------------------------------------------------
def test_value_errors_state_space_divergence():
    x = np.random.default_rng(0).normal(size=(50, 2))
    cases = [
        ({"x_true": x[:, 0], "x_gen": x}, "x_true"),
        ({"x_true": x, "x_gen": x[None]}, "x_gen"),
        ({"x_true": x, "x_gen": x[:, :1]}, "x_gen"),
        ({"x_true": x[:1], "x_gen": x}, "x_true"),
        ({"x_true": x[:0], "x_gen": x}, "x_true"),
        ({"x_true": np.zeros((5, 0)), "x_gen": np.zeros((5, 0))}, "x_true"),
        ({"x_true": np.where(x > 1, np.nan, x), "x_gen": x}, "x_true"),
        ({"x_true": np.ones((20, 2)), "x_gen": x}, "constant"),
        ({"x_true": x, "x_gen": x, "method": "kde"}, "method"),
        ({"x_true": x, "x_gen": x, "compat": "julia"}, "python-binning"),
        ({"x_true": x, "x_gen": x, "compat": ["symmetric", "x"]}, "compat"),
        ({"x_true": x, "x_gen": x, "method": "gmm", "compat": "minmax"}, "binning"),
        ({"x_true": x, "x_gen": x, "n_bins": 0}, "n_bins"),
        ({"x_true": x, "x_gen": x, "smoothing": 0.0}, "smoothing"),
        ({"x_true": x, "x_gen": x, "method": "gmm", "sigma2": -1.0}, "sigma2"),
        ({"x_true": x, "x_gen": x, "method": "gmm", "n_samples": 0}, "n_samples"),
        ({"x_true": x, "x_gen": x, "method": "gmm", "max_points": 0}, "max_points"),
    ]
    for kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            state_space_divergence(**kwargs)


def test_value_errors_power_spectrum_distance():
    x = np.random.default_rng(0).normal(size=(50, 2))
    cases = [
        ((x, x[:40]), {}, "length"),
        ((x, x[:, :1]), {}, "x_gen"),
        ((x[:, 0], x), {}, "x_true"),
        ((x[:1], x[:1]), {}, "x_true"),
        ((np.ones((50, 2)), x), {}, "constant"),
        ((x, x), {"smoothing": -1.0}, "smoothing"),
        ((x, x), {"compat": "python-binning"}, "dysts"),
    ]
    for args, kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            power_spectrum_distance(*args, **kwargs)


def test_value_errors_prediction_error():
    model = ShPLRNN(3, 4)
    x = np.random.default_rng(0).normal(size=(30, 2))
    cases = [
        ((model, x[None, None]), {}, "x must have shape"),
        ((model, x[:, 0]), {}, "x must have shape"),
        ((model, x, 30), {}, "more than n"),
        ((model, np.where(x > 1, np.inf, x)), {}, "non-finite"),
        ((model, np.ones((30, 4))), {}, "state_dim"),
        ((model, x), {"observed": [0]}, "observed"),
        ((model, x), {"observed": [1, 1]}, "observed"),
        ((model, x), {"observed": [0, 3]}, "observed"),
        ((model, x), {"observed": [0.0, 1.0]}, "observed"),
        ((model, x, 0), {}, "n must"),
    ]
    for args, kwargs, match in cases:
        with pytest.raises(ValueError, match=match):
            prediction_error(*args, **kwargs)


def test_value_errors_lyapunov():
    model = linear_model([0.5, 0.5], [0.0, 0.0])
    L = Lorenz63()
    cases = [
        (lambda: max_lyapunov(model, np.zeros(3)), "h0"),
        (lambda: max_lyapunov(model, np.array([np.nan, 0.0])), "h0"),
        (lambda: max_lyapunov(model, T=0), "T"),
        (lambda: max_lyapunov(model, transient=-1), "transient"),
        (lambda: max_lyapunov(model, renormalise_every=0), "renormalise_every"),
        (lambda: max_lyapunov(model, k=3), "k must"),
        (lambda: max_lyapunov(model, dt=0.0), "dt"),
        (lambda: max_lyapunov_flow(L, None, np.ones(3), -0.1), "dt"),
        (lambda: max_lyapunov_flow(L, None, np.ones((3, 1)), 0.1), "x0"),
        (lambda: max_lyapunov_flow(L, None, np.full(3, np.inf), 0.1), "x0"),
        (lambda: max_lyapunov_flow(L.g, None, np.ones(3), 0.1), "jacobian"),
        (lambda: max_lyapunov_flow(L.g, 3.0, np.ones(3), 0.1), "callables"),
        (lambda: max_lyapunov_flow(L, None, np.ones(3), 0.1, k=4), "k must"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
    with pytest.raises(ValueError, match="autonomous"):
        from pitsolve.models import GRU

        max_lyapunov(GRU(3, 2))


def test_evaluate_spectrum_segment_is_the_mean_over_segment_pairs():
    """``spectrum_segment``: D_H is the mean of D_H over consecutive segment pairs (the
    long free-run evaluation); without it, D_H of the whole series."""
    from pitsolve.dsr.evaluate import evaluate, validation_score

    model = ODEStep(Lorenz63(), dt=0.01)
    x = model.sequential(np.array([1.0, 1.0, 1.0]), None, 6000)[2000:]
    whole = evaluate(model, x, lyapunov_steps=10, keep_trajectory=True)
    seg = evaluate(model, x, lyapunov_steps=10, keep_trajectory=True, spectrum_segment=1000)
    gen = seg.generated
    np.testing.assert_array_equal(gen, whole.generated)
    expect = np.mean([power_spectrum_distance(x[k * 1000:(k + 1) * 1000],
                                              gen[k * 1000:(k + 1) * 1000]) for k in range(4)])
    assert seg.D_H == pytest.approx(expect, rel=1e-12)
    assert whole.D_H == pytest.approx(power_spectrum_distance(x, gen), rel=1e-12)
    assert seg.D_stsp == whole.D_stsp  # only D_H is segmented
    record = []
    score = validation_score(x, record=record, spectrum_segment=1000)(model)
    assert record[0]["D_H"] == pytest.approx(expect, rel=1e-12)
    assert score == pytest.approx(seg.D_stsp + seg.D_H)
    with pytest.raises(ValueError, match="spectrum_segment"):
        evaluate(model, x, lyapunov_steps=10, spectrum_segment=2)
