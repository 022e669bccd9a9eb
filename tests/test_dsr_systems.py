"""Benchmark flows (pitsolve.dsr.systems) and series files (pitsolve.dsr.io)."""

from __future__ import annotations

import dataclasses
import inspect
import sys

import numpy as np
import pytest

from pitsolve.dsr import io as dio
from pitsolve.dsr import systems as S

NAMES = sorted(S.SYSTEMS)


# ---------------------------------------------------------------------------------------------
# Generators
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_registry_agree(name):
    """Each generator returns a finite (T, dim) float64 array; the registry matches it."""
    info = S.system(name)
    x = S.generate(name, 300)
    assert x.shape == (300, info.dim)
    assert x.dtype == np.float64 and x.flags.c_contiguous and x.flags.writeable
    assert np.isfinite(x).all()
    sig = inspect.signature(info.generate).parameters
    assert sig["dt"].default == info.dt
    assert sig["transient"].default == info.transient
    assert info.generate is getattr(S, name)
    assert info.lyapunov_max > 0 and info.lyapunov_time == pytest.approx(1 / info.lyapunov_max)
    assert len(info.initial_condition) == info.dim


def test_generate_is_the_named_function_and_names_are_normalised():
    """generate(name, ...) equals calling the generator; case and '-' are ignored."""
    a = S.generate("Lorenz63", 200, seed=3, noise=0.1)
    b = S.lorenz63(200, seed=3, noise=0.1)
    np.testing.assert_array_equal(a, b)
    assert S.system("sprott-b") is S.SYSTEMS["sprott_b"]


def test_lorenz96_dimension():
    """Lorenz-96 has N observed dimensions."""
    assert S.lorenz96(100, N=20).shape == (100, 20)


def test_deterministic_per_seed_and_different_across_seeds():
    """A seed fixes the series, also when recomputed from scratch; other seeds differ."""
    a = S.lorenz63(500, seed=7, noise=0.05)
    S._clear_cache()
    b = S.lorenz63(500, seed=7, noise=0.05)
    np.testing.assert_array_equal(a, b)
    c = S.lorenz63(500, seed=8, noise=0.05)
    assert np.abs(a - c).max() > 1.0
    # a Generator seed works and is not memoised
    g1 = S.lorenz63(200, seed=np.random.default_rng(1))
    g2 = S.lorenz63(200, seed=np.random.default_rng(1))
    np.testing.assert_array_equal(g1, g2)


def test_returned_arrays_are_fresh():
    """Changing a returned array does not change later results (the memo is protected)."""
    a = S.rossler(200, seed=1)
    keep = a.copy()
    a[:] = 0.0
    np.testing.assert_array_equal(S.rossler(200, seed=1), keep)


def test_zscore():
    """zscore=True gives every dimension mean 0 and standard deviation 1; False does not."""
    z = S.lorenz63(2000, seed=2)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-12)
    np.testing.assert_allclose(z.std(axis=0), 1.0, rtol=1e-12)
    raw = S.lorenz63(2000, seed=2, zscore=False)
    assert raw[:, 2].mean() > 15.0
    np.testing.assert_allclose((raw - raw.mean(0)) / raw.std(0), z, atol=1e-12)


def test_single_sample_is_allowed():
    """T = 1 returns one state; z-scoring centres it without dividing by zero."""
    assert S.lorenz63(1, zscore=False).shape == (1, 3)
    np.testing.assert_array_equal(S.lorenz63(1), np.zeros((1, 3)))


def test_noise_level():
    """noise = η adds N(0, (η σ_n)²) per dimension, σ_n the clean dimension's std."""
    clean = S.lorenz63(20_000, seed=4, zscore=False)
    noisy = S.lorenz63(20_000, seed=4, zscore=False, noise=0.05)
    ratio = (noisy - clean).std(axis=0) / clean.std(axis=0)
    np.testing.assert_allclose(ratio, 0.05, rtol=0.03)
    assert abs((noisy - clean).mean()) < 0.01 * clean.std()


def test_lorenz63_stays_on_the_attractor():
    """Un-z-scored Lorenz-63 stays in its known bounding box and visits both wings."""
    x = S.lorenz63(20_000, seed=5, zscore=False)
    assert np.abs(x[:, 0]).max() < 25 and np.abs(x[:, 1]).max() < 35
    assert 0 < x[:, 2].min() and x[:, 2].max() < 55
    assert (x[:, 0] > 5).mean() > 0.2 and (x[:, 0] < -5).mean() > 0.2



def test_lorenz63_drift_slow_cycle():
    """(u, v) turns on the unit circle once per period; z's level follows ρ = 28 + 8u."""
    x = S.lorenz63_drift(20_000, seed=3, zscore=False)  # two slow periods of 100 time units
    u, v = x[:, 3], x[:, 4]
    np.testing.assert_allclose(u**2 + v**2, 1.0, atol=1e-8)
    turns = np.unwrap(np.arctan2(v, u))
    assert (turns[-1] - turns[0]) / (0.01 * (len(x) - 1)) == pytest.approx(2 * np.pi / 100)
    high, low = x[u > 0.5], x[u < -0.5]
    assert high[:, 2].mean() > low[:, 2].mean() + 8
    assert high[:, 0].std() > 1.2 * low[:, 0].std()

@pytest.mark.parametrize("name", NAMES)
def test_series_follows_the_registered_vector_field(name):
    """Central differences of a finely sampled series match g(x) of the registry."""
    info = S.system(name)
    dt = 1e-3
    x = S.generate(name, 60, dt=dt, zscore=False, seed=1)
    deriv = (x[2:] - x[:-2]) / (2 * dt)
    g = info.vector_field(x[1:-1])
    # O(dt²) truncation error; a wrong term in either formula is off by far more
    np.testing.assert_allclose(deriv, g, atol=1e-3 * np.abs(g).max())


@pytest.mark.parametrize("name", NAMES)
def test_jacobian_matches_finite_differences(name):
    """∂g/∂x of the registry equals central differences of g, on a batch of states."""
    info = S.system(name)
    rng = np.random.default_rng(0)
    x = S.generate(name, 4, dt=0.5, zscore=False) + 0.1 * rng.standard_normal((4, info.dim))
    J = info.jacobian(x)
    assert J.shape == (4, info.dim, info.dim)
    eps = 1e-6
    for j in range(info.dim):
        e = np.zeros(info.dim)
        e[j] = eps
        col = (info.vector_field(x + e) - info.vector_field(x - e)) / (2 * eps)
        np.testing.assert_allclose(J[:, :, j], col, rtol=1e-6, atol=1e-6)
    # un-batched call and parameter overrides
    assert info.vector_field(x[0]).shape == (info.dim,)
    assert info.jacobian(x[0]).shape == (info.dim, info.dim)


def test_parameters_change_the_field():
    """Keyword parameters reach both the generator and the vector field."""
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_allclose(S.SYSTEMS["lorenz63"].vector_field(x, rho=0.0)[1], -1 * 3 - 2)
    a = S.lorenz63(300, seed=0, rho=28.0)
    b = S.lorenz63(300, seed=0, rho=25.0)
    assert np.abs(a - b).max() > 0.1


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"T": 0}, ValueError, "T must be a positive integer"),
        ({"T": 10.0}, TypeError, "T must be a positive integer"),
        ({"T": True}, TypeError, "T must be"),
        ({"dt": 0.0}, ValueError, "dt must be > 0"),
        ({"dt": -0.1}, ValueError, "dt must be > 0"),
        ({"dt": float("nan")}, ValueError, "dt must be finite"),
        ({"dt": "0.1"}, TypeError, "dt must be a real number"),
        ({"noise": -0.1}, ValueError, "noise must be >= 0"),
        ({"transient": -1.0}, ValueError, "transient must be >= 0"),
        ({"seed": "a"}, TypeError, "seed must be"),
        ({"seed": -1}, ValueError, "seed must be >= 0"),
        ({"sigma": float("inf")}, ValueError, "sigma must be finite"),
        ({"zscore": 1}, TypeError, "zscore must be a bool"),
    ],
)
def test_argument_errors_name_the_argument(kwargs, exc, match):
    """Malformed arguments raise before any integration, naming the argument."""
    kw = {"T": 10, **kwargs}
    with pytest.raises(exc, match=match):
        S.lorenz63(**kw)


def test_other_argument_errors():
    """Unknown names list the valid ones; Lorenz-96 needs N ≥ 4; unknown keywords fail."""
    with pytest.raises(ValueError, match="valid names: chen, halvorsen, lorenz63"):
        S.generate("lorenz64", 10)
    with pytest.raises(ValueError, match="unknown system"):
        S.system("nope")
    with pytest.raises(TypeError):
        S.system(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="N must be >= 4"):
        S.lorenz96(10, N=3)
    with pytest.raises(TypeError):
        S.generate("rossler", 10, sigma=1.0)
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 3\)"):
        S.SYSTEMS["lorenz63"].vector_field(np.zeros(4))


def test_escaping_trajectory_raises():
    """A trajectory that leaves every bounded set is reported with the system's name."""
    with pytest.raises(RuntimeError, match="rossler"):
        S.rossler(50, a=1.0, transient=25.0)


# ---------------------------------------------------------------------------------------------
# Reference maximal Lyapunov exponents, re-estimated here
# ---------------------------------------------------------------------------------------------


def _benettin(info, *, h, t_transient, t_align, t_measure, K=64, seed=0):
    """λ_max by Benettin's method: RK4 on (x, v) with v̇ = J(x) v, |v| renormalised each step.

    An ensemble of K independent trajectories (started around the system's standard initial
    condition) runs in lockstep; the estimate is the mean of their finite-time exponents.
    """
    rng = np.random.default_rng(seed)
    x = np.asarray(info.initial_condition) + info.perturbation * rng.standard_normal((K, info.dim))
    f, J = info.vector_field, info.jacobian

    def field(x, v):
        return f(x), np.einsum("kij,kj->ki", J(x), v)

    def rk4(x, v):
        k1, l1 = field(x, v)
        k2, l2 = field(x + 0.5 * h * k1, v + 0.5 * h * l1)
        k3, l3 = field(x + 0.5 * h * k2, v + 0.5 * h * l2)
        k4, l4 = field(x + h * k3, v + h * l3)
        return x + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4), v + h / 6 * (l1 + 2 * l2 + 2 * l3 + l4)

    v = rng.standard_normal((K, info.dim))
    for _ in range(round(t_transient / h)):
        x, v = rk4(x, v)
        v /= np.linalg.norm(v, axis=1, keepdims=True)
    n_align, n = round(t_align / h), round(t_measure / h)
    logs = np.zeros(K)
    for i in range(n_align + n):
        x, v = rk4(x, v)
        norms = np.linalg.norm(v, axis=1)
        v /= norms[:, None]
        if i >= n_align:
            logs += np.log(norms)
    return float(np.mean(logs / (n * h)))


_LYAP = {
    "lorenz63": {"h": 0.01, "t_transient": 10, "t_align": 5, "t_measure": 25},
    # two whole slow periods (100 time units each): the exponent varies over the cycle, and
    # the ensemble's slow phases start close together
    "lorenz63_drift": {"h": 0.02, "t_transient": 100, "t_align": 5, "t_measure": 200},
    "lorenz96": {"h": 0.02, "t_transient": 10, "t_align": 5, "t_measure": 25},
    "rossler": {"h": 0.05, "t_transient": 50, "t_align": 20, "t_measure": 300},
    "chen": {"h": 0.004, "t_transient": 5, "t_align": 3, "t_measure": 10},
    "halvorsen": {"h": 0.01, "t_transient": 10, "t_align": 5, "t_measure": 25},
    "sprott_b": {"h": 0.05, "t_transient": 50, "t_align": 20, "t_measure": 150},
    "thomas": {"h": 0.1, "t_transient": 200, "t_align": 100, "t_measure": 1000},
}


def test_every_system_has_a_lyapunov_check():
    assert set(_LYAP) == set(S.SYSTEMS)


@pytest.mark.parametrize("name", NAMES)
def test_reference_lyapunov_exponent(name):
    """A short ensemble Benettin estimate is within 10 % of the registered λ_max."""
    info = S.system(name)
    assert _benettin(info, **_LYAP[name]) == pytest.approx(info.lyapunov_max, rel=0.10)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_reference_lyapunov_exponent_long(name):
    """Five times longer, with another seed: within 4 % of the registered λ_max."""
    info = S.system(name)
    cfg = {**_LYAP[name], "t_measure": 5 * _LYAP[name]["t_measure"]}
    assert _benettin(info, **cfg, seed=1) == pytest.approx(info.lyapunov_max, rel=0.04)


def test_lorenz96_n20_lyapunov_exponent():
    """The N = 20 value quoted in the registry (1.55) is reproduced within 10 %."""
    info = S.system("lorenz96")
    info20 = dataclasses.replace(info, initial_condition=(8.0,) * 20, dim=20)
    assert _benettin(info20, **_LYAP["lorenz96"]) == pytest.approx(1.552, rel=0.10)


# ---------------------------------------------------------------------------------------------
# dysts adapter
# ---------------------------------------------------------------------------------------------


def test_from_dysts_without_dysts(monkeypatch):
    """Without dysts installed the adapter says how to install it."""
    monkeypatch.setitem(sys.modules, "dysts", None)
    monkeypatch.setitem(sys.modules, "dysts.flows", None)
    with pytest.raises(ImportError, match="pip install dysts"):
        S.from_dysts("Lorenz", 100, 0.01)


def test_from_dysts_integrates_the_rhs_itself(fake_dysts):
    """The adapter samples the dysts right-hand side at the requested dt, seeded."""
    x = S.from_dysts("Lorenz", 400, 0.01, seed=3, zscore=False)
    assert x.shape == (400, 3) and np.isfinite(x).all()
    np.testing.assert_array_equal(x, S.from_dysts("Lorenz", 400, 0.01, seed=3, zscore=False))
    assert np.abs(x - S.from_dysts("Lorenz", 400, 0.01, seed=4, zscore=False)).max() > 1.0
    fine = S.from_dysts("Lorenz", 50, 0.001, seed=3, zscore=False)
    g = S.SYSTEMS["lorenz63"].vector_field(fine[1:-1])
    np.testing.assert_allclose((fine[2:] - fine[:-2]) / 0.002, g, atol=1e-3 * np.abs(g).max())
    assert 0 < x[:, 2].min() and x[:, 2].max() < 55
    other = S.from_dysts("Lorenz", 400, 0.01, seed=3, zscore=False, rho=25.0)
    assert np.abs(x - other).max() > 0.1
    z = S.from_dysts("Lorenz", 400, 0.01, seed=3)
    np.testing.assert_allclose(z.std(axis=0), 1.0)


def test_from_dysts_rejects_unknown_and_delay_systems(fake_dysts):
    with pytest.raises(ValueError, match="no system named 'Nope'"):
        S.from_dysts("Nope", 10, 0.01)
    with pytest.raises(ValueError, match="not an ordinary differential equation"):
        S.from_dysts("MackeyGlass", 10, 0.01)


# ---------------------------------------------------------------------------------------------
# Series files
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def series():
    return np.random.default_rng(0).standard_normal((50, 3))


def test_npy_round_trip(tmp_path, series):
    """.npy saves and loads bit-exactly; 1-D becomes (T, 1); integers become float64."""
    p = tmp_path / "x.npy"
    dio.save_series(p, series)
    out = dio.load_series(p)
    np.testing.assert_array_equal(out, series)
    assert out.dtype == np.float64
    np.save(tmp_path / "one.npy", np.arange(5))
    one = dio.load_series(tmp_path / "one.npy")
    assert one.shape == (5, 1) and one.dtype == np.float64
    dio.save_series(str(tmp_path / "u.NPY"), series[:, 0])
    assert dio.load_series(tmp_path / "u.NPY").shape == (50, 1)


def test_npz_single_and_keyed(tmp_path, series):
    """.npz: a single array loads without a key; several need key=, the error lists them."""
    np.savez(tmp_path / "one.npz", data=series)
    np.testing.assert_array_equal(dio.load_series(tmp_path / "one.npz"), series)
    np.savez(tmp_path / "two.npz", train=series, test=series[:10])
    assert dio.load_series(tmp_path / "two.npz", key="test").shape == (10, 3)
    with pytest.raises(ValueError, match=r"two\.npz.*2 arrays \(train, test\).*key="):
        dio.load_series(tmp_path / "two.npz")
    with pytest.raises(ValueError, match=r"no array 'val'.*keys: train, test"):
        dio.load_series(tmp_path / "two.npz", key="val")
    np.savez(tmp_path / "empty.npz")
    with pytest.raises(ValueError, match="holds no arrays"):
        dio.load_series(tmp_path / "empty.npz")


@pytest.mark.parametrize("suffix", [".csv", ".txt"])
def test_text_round_trip(tmp_path, series, suffix):
    """Text files round-trip float64 exactly, with and without a header of names."""
    p = tmp_path / f"x{suffix}"
    dio.save_series(p, series)
    np.testing.assert_array_equal(dio.load_series(p), series)
    dio.save_series(p, series, header=["x", "y", "z"])
    assert p.read_text().splitlines()[0] in ("x,y,z", "x y z")
    np.testing.assert_array_equal(dio.load_series(p), series)


def test_text_formats(tmp_path):
    """Comma or whitespace cells, spaces around commas, comments, blank lines, a header."""
    p = tmp_path / "a.csv"
    p.write_text("time, x\n0, 1.5\n1 ,-2e-3\n\n2,3\n")
    np.testing.assert_array_equal(dio.load_series(p), [[0, 1.5], [1, -2e-3], [2, 3]])
    q = tmp_path / "b.txt"
    q.write_text("# a comment\nx\ty z\n1 2 3\n  4\t5   6\n")
    np.testing.assert_array_equal(dio.load_series(q), [[1, 2, 3], [4, 5, 6]])
    r = tmp_path / "c.TXT"
    r.write_text("1\n2\n3\n")
    assert dio.load_series(r).shape == (3, 1)


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("1,2\n3,4\n5\n6,7\n", r"line 3: 1 cell\(s\), but the rows above have 2"),
        ("1 2\n3 4 5\n", r"line 2: 3 cell\(s\)"),
        ("1,2\n3,abc\n", "line 2, column 2: non-numeric value 'abc'"),
        ("x,2\n3,4\n", "line 1, column 1: non-numeric value 'x'"),
        ("1,,2\n3,4,5\n", "line 1, column 2: non-numeric value ''"),
        ("1,2\n# c\n3,nan\n", r"non-finite value nan \(NaN or Inf\) at line 3, column 2"),
        ("1 inf\n2 3\n", "non-finite value inf .* at line 1, column 2"),
        ("1,2\n", "at least 2 time steps, got 1"),
        ("# only a comment\n\n", "no data lines"),
        ("x,y\n", "a header line but no data lines"),
    ],
)
def test_text_errors_name_file_and_line(tmp_path, text, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=match) as err:
        dio.load_series(p)
    assert "bad.csv" in str(err.value)


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.array([[0.0, 1.0], [2.0, np.inf], [np.nan, 1.0]]), r"inf .* at index \(1, 1\)"),
        (np.array([np.nan, 1.0]), r"nan .* at index \(0, 0\)"),
        (np.zeros((3, 2, 2)), r"rank 3, shape \(3, 2, 2\)"),
        (np.array(1.0), "rank 0"),
        (np.zeros((1, 3)), "at least 2 time steps, got 1"),
        (np.zeros((0,)), "at least 2 time steps, got 0"),
        (np.zeros((4, 0)), "no columns"),
        (np.zeros(3, dtype=complex), "real numbers, got complex"),
        (np.array(["a", "b"]), "real numbers, got string"),
    ],
)
def test_array_errors_name_file_and_position(tmp_path, array, match):
    p = tmp_path / "bad.npy"
    np.save(p, array)
    with pytest.raises(ValueError, match=match) as err:
        dio.load_series(p)
    assert "bad.npy" in str(err.value)


def test_file_level_errors(tmp_path, series):
    """Missing file, directory, unknown extension, misused key, unreadable content."""
    with pytest.raises(FileNotFoundError, match=r"not found: .*missing\.npy"):
        dio.load_series(tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="is a directory"):
        dio.load_series(tmp_path)
    (tmp_path / "x.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"x\.json: unknown extension '\.json'; supported"):
        dio.load_series(tmp_path / "x.json")
    dio.save_series(tmp_path / "x.csv", series)
    with pytest.raises(ValueError, match=r"key= applies only to \.npz"):
        dio.load_series(tmp_path / "x.csv", key="a")
    np.save(tmp_path / "obj.npy", np.array([None, 1.0], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match=r"obj\.npy: cannot read"):
        dio.load_series(tmp_path / "obj.npy")
    (tmp_path / "junk.npy").write_bytes(b"not an array at all")
    with pytest.raises(ValueError, match=r"junk\.npy: cannot read"):
        dio.load_series(tmp_path / "junk.npy")
    np.savez(tmp_path / "arch.npz", a=series)
    (tmp_path / "arch.npz").rename(tmp_path / "renamed.npy")
    with pytest.raises(ValueError, match=r"renamed\.npy: not an \.npy array"):
        dio.load_series(tmp_path / "renamed.npy")
    np.save(tmp_path / "plain.npy", series)
    (tmp_path / "plain.npy").rename(tmp_path / "plain.npz")
    with pytest.raises(ValueError, match=r"plain\.npz: not an \.npz archive"):
        dio.load_series(tmp_path / "plain.npz")
    (tmp_path / "latin.txt").write_bytes(b"1 2\n3 \xe9\n")
    with pytest.raises(ValueError, match=r"latin\.txt: not a UTF-8 text file"):
        dio.load_series(tmp_path / "latin.txt")


def test_save_errors(tmp_path, series):
    """save_series refuses what load_series would refuse, and unsupported formats."""
    with pytest.raises(ValueError, match=r"cannot save with extension '\.npz'"):
        dio.save_series(tmp_path / "x.npz", series)
    with pytest.raises(ValueError, match=r"x: non-finite value nan .* index \(0, 1\)"):
        dio.save_series(tmp_path / "x.npy", np.array([[0.0, np.nan], [1.0, 2.0]]))
    with pytest.raises(ValueError, match="at least 2 time steps"):
        dio.save_series(tmp_path / "x.csv", [1.0])
    with pytest.raises(ValueError, match="header has 2 names for 3 columns"):
        dio.save_series(tmp_path / "x.csv", series, header=["a", "b"])
    with pytest.raises(ValueError, match="header name '1'"):
        dio.save_series(tmp_path / "x.csv", series, header=["a", "b", "1"])
    with pytest.raises(ValueError, match="header= applies only to text files"):
        dio.save_series(tmp_path / "x.npy", series, header=["a", "b", "c"])
    assert not (tmp_path / "x.npy").exists() and not (tmp_path / "x.csv").exists()
