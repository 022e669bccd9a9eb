"""``pitsolve reconstruct``'s systems, recipes, multi-seed runs and data paths: the recipe
registry, ``--seeds``, ``dysts:NAME``, positional data files, ``--embed``, an affine
observation for ``--latent`` < N, and the data errors (tiny configurations)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from pitsolve import cli
from pitsolve.dsr import lorenz63
from pitsolve.dsr.embedding import delay_embed, rows_lost
from pitsolve.dsr.prepare import MIN_STEPS, prepare_series
from pitsolve.dsr.recipes import GENERIC, RECIPES, TRAINING_FIELDS, recipe
from pitsolve.dsr.seeds import evaluations, parse_seeds, summarize_seeds
from pitsolve.dsr.systems import SYSTEMS

TINY = ["--T", "3000", "--epochs", "2", "--steps-per-epoch", "3", "--hidden", "8",
        "--seq-len", "50", "--batch-size", "4", "--long-run", "1000", "--quiet"]
FILE_TINY = TINY[2:]  # a data file has no --T


def run(*args, timeout=240, env=None):
    env = {**os.environ, "MPLBACKEND": "Agg", **(env or {})}
    return subprocess.run([sys.executable, "-m", "pitsolve", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def one_line_error(res, message):
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], res.stderr


# -- recipes ----------------------------------------------------------------------------------
def test_every_builtin_system_has_a_recipe():
    assert set(RECIPES) == set(SYSTEMS)
    for name, r in RECIPES.items():
        assert r.source, name
        assert recipe(name) is r
    assert recipe("Lorenz63") is RECIPES["lorenz63"] and recipe("sprott-b") is RECIPES["sprott_b"]
    assert recipe("dysts:Rossler") is GENERIC and recipe(None) is GENERIC
    with pytest.raises(ValueError, match="rossler"):
        recipe("rosler")


def test_lorenz63_recipe_is_the_previous_command_line_default():
    assert RECIPES["lorenz63"].training() == {
        "model": "shplrnn", "latent": None, "hidden": 50, "T": 100_000, "epochs": 60,
        "steps_per_epoch": 500, "seq_len": 200, "batch_size": 16, "lr": 1e-3,
        "forcing": "agtf"}
    assert dict(RECIPES["lorenz63"].system_params) == {}


def test_lorenz96_recipe_has_twenty_sites():
    r = RECIPES["lorenz96"]
    assert dict(r.system_params) == {"N": 20} and r.latent is None and r.hidden == 100
    assert r.lyapunov_max == pytest.approx(1.552)


def _resolved(*argv):
    args = cli._parser().parse_args(["reconstruct", *argv])
    kind, name, rec = cli._resolve(args)
    return args, kind, name, rec


@pytest.mark.parametrize("system", [None, "rossler", "lorenz96", "dysts:Lorenz"])
def test_recipe_fills_the_options_not_given(system):
    args, kind, name, rec = _resolved(*([system] if system else []))
    assert rec is recipe(None if kind == "dysts" else name)
    for field in TRAINING_FIELDS:
        assert getattr(args, field) == getattr(rec, field), field


def test_explicit_flags_win_over_the_recipe():
    args, *_ = _resolved("lorenz96", "--hidden", "7", "--lr", "0.01", "--forcing", "gtf:0.1",
                         "--epochs", "3", "--latent", "4")
    assert (args.hidden, args.lr, args.forcing, args.epochs, args.latent) == (7, 0.01,
                                                                            "gtf:0.1", 3, 4)
    assert args.steps_per_epoch == RECIPES["lorenz96"].steps_per_epoch


def test_help_says_defaults_come_from_the_recipe(capsys):
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["reconstruct", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert text.count("default: from the system's recipe") >= 9
    assert "dysts:NAME" in text and "--seeds" in text and "--embed" in text


def test_unknown_system_names_the_valid_ones():
    res = run("reconstruct", "rosler")
    one_line_error(res, "unknown system 'rosler'")
    assert "rossler" in res.stderr and "dysts:NAME" in res.stderr


# -- dysts ------------------------------------------------------------------------------------
def test_dysts_system_without_dysts_is_one_line(tmp_path):
    block = tmp_path / "block" / "dysts"
    block.mkdir(parents=True)
    (block / "__init__.py").write_text("raise ImportError('dysts blocked by the test')\n")
    res = run("reconstruct", "dysts:Rossler", *TINY, "--out", str(tmp_path / "run"),
              env={"PYTHONPATH": str(tmp_path / "block")})
    one_line_error(res, "dysts:Rossler needs the dysts package: pip install 'pitsolve[dysts]'")


def test_dysts_system_reads_the_metadata(fake_dysts):
    from pitsolve.dsr.systems import dysts_system

    info = dysts_system("lorenz")
    assert (info.name, info.dim, info.period, info.lyapunov_max) == ("Lorenz", 3, 1.5, 0.89)
    assert info.dt == pytest.approx(0.015) and info.integration_dt == 0.0003
    with pytest.raises(ValueError, match="did you mean Lorenz"):
        dysts_system("Lorenx")
    with pytest.raises(ValueError, match=r"valid names: Lorenz$"):  # no delay equations
        dysts_system("MackeyGlass")


def test_dysts_reconstruct_with_a_stand_in(fake_dysts, tmp_path, capsys):
    out = tmp_path / "run"
    args = cli._parser().parse_args(["reconstruct", "dysts:lorenz", *TINY, "--out", str(out)])
    assert cli._reconstruct(args) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["data"] == "dysts:Lorenz (dt=0.015)" and report["dt"] == pytest.approx(0.015)
    assert report["lyapunov_truth_per_time"] == 0.89
    assert "truth" in capsys.readouterr().out


def test_dysts_system_metadata():
    pytest.importorskip("dysts")
    from pitsolve.dsr.systems import dysts_system

    info = dysts_system("rossler")  # case-insensitive
    assert info.name == "Rossler" and info.dim == 3
    assert info.dt == pytest.approx(info.period / 100)
    assert info.lyapunov_max is None or info.lyapunov_max > 0
    with pytest.raises(ValueError, match="Rossler"):
        dysts_system("Rosler")


def test_dysts_reconstruct_tiny(tmp_path):
    pytest.importorskip("dysts")
    out = tmp_path / "run"
    res = run("reconstruct", "dysts:Rossler", *TINY, "--out", str(out))
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["data"].startswith("dysts:Rossler")
    assert report["dt"] > 0


# -- seeds ------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, seeds", [("3", [3]), ("0,2,5", [0, 2, 5]),
                                         ("0-4", [0, 1, 2, 3, 4]), ("0-1, 7", [0, 1, 7])])
def test_parse_seeds(spec, seeds):
    assert parse_seeds(spec) == seeds


@pytest.mark.parametrize("spec, message", [("", "empty"), ("a", "'a'"), ("3-1", "1-3"),
                                           ("1,1", "twice"), ("0-2,2", "twice"),
                                           ("1-", "'1-'"), ("-2", "'-2'")])
def test_parse_seeds_rejects(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_seeds(spec)


def test_bad_seeds_are_one_line_and_exclusive_with_seed(tmp_path):
    one_line_error(run("reconstruct", "--seeds", "3-1", *TINY), "--seeds 3-1")
    res = run("reconstruct", "--seeds", "0-1", "--seed", "2", *TINY)
    assert res.returncode == 2 and "not allowed with argument" in res.stderr


def _report(d_stsp, diverged=False, **extra):
    ev = {"D_stsp": d_stsp, "D_H": 0.1, "PE": 1.0, "lyap_per_step": 0.01,
          "lyap_per_time": None if diverged else 1.0, "diverged": diverged}
    return {"best": ev, "final": dict(ev), "wall_time_s": 10.0 * d_stsp,
            "config": {"D_stsp": "not an evaluation"}, "data": "x", **extra}


def test_summarize_seeds_follows_the_reports_keys():
    reports = {0: _report(1.0), 1: _report(3.0, long={"best": {"D_stsp": 5.0, "x": {"y": 2.0}}}),
               2: _report(2.0), 3: _report(float("nan"), diverged=True)}
    assert set(evaluations(reports[1])) == {"best", "final", "long.best"}
    s = summarize_seeds(reports)
    assert s["seeds"] == [0, 1, 2, 3] and set(s["runs"]) == {"0", "1", "2", "3"}
    best = s["summary"]["best"]
    assert best["runs"] == 4 and best["diverged"] == 1
    assert best["D_stsp"] == {"median": 2.0, "mad": 1.0, "min": 1.0, "max": 3.0, "n": 3}
    assert s["summary"]["long.best"]["x.y"]["median"] == 2.0  # a new, nested measure
    wall = s["summary"]["wall_time_s"]
    assert (wall["min"], wall["n"]) == (10.0, 3)  # NaN left out
    assert "config" not in s["summary"]
    json.dumps(s)


def test_seeds_run_each_seed_and_summarize(tmp_path):
    out = tmp_path / "runs"
    res = run("reconstruct", *TINY, "--seeds", "0-1", "--out", str(out))
    assert res.returncode == 0, res.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [0, 1]
    for stat in ("median", "mad", "min", "max"):
        for key in ("D_stsp", "D_H", "PE", "lyap_per_time"):
            assert stat in summary["summary"]["best"][key]
        assert stat in summary["summary"]["wall_time_s"]
    assert (out / "seeds.png").exists()
    rows = [line for line in res.stdout.splitlines() if line.startswith("seed ")]
    assert len(rows) == 2 and any(line.startswith("median") for line in res.stdout.splitlines())
    # seed 1 ran exactly as a single run with --seed 1 would
    single = tmp_path / "single"
    res1 = run("reconstruct", *TINY, "--seed", "1", "--out", str(single))
    assert res1.returncode == 0, res1.stderr
    one = json.loads((single / "report.json").read_text())
    seeded = json.loads((out / "seed-1" / "report.json").read_text())
    assert seeded["best"] == one["best"] and seeded["loss_history"] == one["loss_history"]
    assert seeded["config"]["seed"] == 1 and seeded["config"]["seeds"] is None
    # --resume continues every seed's directory
    more = [a if a != "2" else "3" for a in TINY]
    again = run("reconstruct", *more, "--seeds", "0-1", "--out", str(out), "--resume")
    assert again.returncode == 0, again.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert [summary["runs"][k]["epochs"] for k in ("0", "1")] == [3, 3]


def test_resume_seeds_without_any_checkpoint(tmp_path):
    res = run("reconstruct", *TINY, "--seeds", "0-1", "--out", str(tmp_path / "x"), "--resume")
    one_line_error(res, "--resume: no checkpoint")


# -- delay embedding --------------------------------------------------------------------------
def naive_delay_embed(x, dim, lag):
    x = np.asarray(x, dtype=float).reshape(len(x), -1)
    T, N = x.shape
    rows = []
    for t in range((dim - 1) * lag, T):
        row = []
        for k in range(dim):
            for n in range(N):
                row.append(x[t - k * lag, n])
        rows.append(row)
    return np.array(rows).reshape(-1, dim * N)


@pytest.mark.parametrize("T, N, dim, lag", [(10, 1, 1, 1), (10, 2, 3, 2), (30, 3, 4, 5),
                                            (7, 1, 7, 1), (9, 2, 2, 7)])
def test_delay_embed_matches_a_loop(T, N, dim, lag):
    x = np.random.default_rng(T * N + dim).normal(size=(T, N))
    y = delay_embed(x, dim, lag)
    assert y.shape == (T - (dim - 1) * lag, dim * N)
    np.testing.assert_array_equal(y, naive_delay_embed(x, dim, lag))
    np.testing.assert_array_equal(y[:, :N], x[(dim - 1) * lag :])  # the current observation


@given(T=st.integers(2, 40), N=st.integers(1, 3), dim=st.integers(1, 5), lag=st.integers(1, 6))
def test_delay_embed_property(T, N, dim, lag):
    x = np.arange(T * N, dtype=float).reshape(T, N)
    if T <= (dim - 1) * lag:
        with pytest.raises(ValueError, match="time steps"):
            delay_embed(x, dim, lag)
        return
    np.testing.assert_array_equal(delay_embed(x, dim, lag), naive_delay_embed(x, dim, lag))
    assert rows_lost(dim, lag) == T - len(delay_embed(x, dim, lag))


@pytest.mark.parametrize("dim, lag, name", [(0, 1, "dim"), (2, 0, "lag"), (2.5, 1, "dim"),
                                            (2, "3", "lag"), (True, 1, "dim")])
def test_delay_embed_rejects_bad_arguments(dim, lag, name):
    with pytest.raises(ValueError, match=f"^{name} must be a positive integer"):
        delay_embed(np.zeros((10, 1)), dim, lag)


def test_delay_embed_one_dimensional_series():
    np.testing.assert_array_equal(delay_embed(np.arange(5.0), 2, 1),
                                  [[1, 0], [2, 1], [3, 2], [4, 3]])


# -- data files -------------------------------------------------------------------------------
def test_prepare_series_zscores_embeds_and_holds_out():
    x = np.random.default_rng(0).normal(3.0, 2.0, size=(1200, 2))
    p = prepare_series(x, embed=(2, 5))
    assert p.x.shape == (1195, 4) and p.embed == (2, 5)
    np.testing.assert_allclose(p.mean, x.mean(0))
    np.testing.assert_allclose(p.x[:, :2], ((x - x.mean(0)) / x.std(0))[5:])
    assert p.n_eval == 250
    assert prepare_series(np.tile(x, (10, 1))).n_eval == 1000


@pytest.mark.parametrize("make, embed, message", [
    (lambda x: np.c_[x, np.full(len(x), 2.0)], None, "column 4 (index 3) is constant"),
    (lambda x: x[: MIN_STEPS - 1], None, f"need at least {MIN_STEPS}"),
    (lambda x: x[:MIN_STEPS], (3, 4), f"need at least {MIN_STEPS + 8}"),
])
def test_prepare_series_rejects(make, embed, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        prepare_series(make(lorenz63(T=1500, seed=0)), name="d.npy", embed=embed)


@pytest.fixture(scope="module")
def series(tmp_path_factory):
    d = tmp_path_factory.mktemp("series")
    x = lorenz63(T=3000, seed=3, zscore=False)
    np.save(d / "l63.npy", x)
    np.savetxt(d / "l63x.csv", x[:, :1], delimiter=",", header="x", comments="")
    bad = x.copy()
    bad[5, 1] = np.nan
    np.save(d / "nan.npy", bad)
    np.save(d / "const.npy", np.c_[x, np.ones(len(x))])
    np.save(d / "short.npy", x[:1005])
    return d


@pytest.mark.parametrize("name, extra, message", [
    ("nan.npy", [], "non-finite value nan"),
    ("const.npy", [], "column 4 (index 3) is constant"),
    ("short.npy", ["--embed", "3,4"], "need at least 1008"),
    ("l63.npy", ["--embed", "3"], "--embed must be DIM,LAG"),
    ("l63.npy", ["--embed", "0,2"], "dim must be a positive integer"),
])
def test_bad_data_is_one_line(series, tmp_path, name, extra, message):
    res = run("reconstruct", str(series / name), *extra, *FILE_TINY, "--out",
              str(tmp_path / "run"))
    one_line_error(res, message)


def test_embed_needs_a_data_file_and_data_is_given_once(series):
    one_line_error(run("reconstruct", "--embed", "3,2", *TINY), "--embed applies to a data file")
    one_line_error(run("reconstruct", str(series / "l63.npy"), "--data",
                       str(series / "l63.npy"), *FILE_TINY), "not both")


def test_positional_data_file_with_delay_embedding(series, tmp_path):
    out = tmp_path / "run"
    res = run("reconstruct", str(series / "l63x.csv"), "--embed", "3,8", "--dt", "0.01",
              *FILE_TINY, "--out", str(out))
    assert res.returncode == 0, res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["data"].startswith(str(series / "l63x.csv")) and "dim 3, lag 8" in report["data"]
    assert report["train_steps"] == 3000 - 16 - 2 * 250
    assert report["lyapunov_truth_per_time"] is None and report["observation"] == "identity"
    # evaluate z-scores and embeds a raw series as the training data were
    ev = run("evaluate", str(out / "model_best.npz"), "--data", str(series / "l63x.csv"))
    assert ev.returncode == 0, ev.stderr
    assert "D_stsp" in json.loads(ev.stdout.splitlines()[-1])


def test_fewer_latent_units_than_data_dimensions(series, tmp_path):
    out = tmp_path / "run"
    res = run("reconstruct", str(series / "l63.npy"), "--latent", "2", *FILE_TINY,
              "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "observed through Affine(N=3)" in res.stderr
    report = json.loads((out / "report.json").read_text())
    assert report["observation"] == "affine"
    assert set(report["best"]) >= {"D_stsp", "D_H", "PE", "lyap_per_time", "diverged"}
    from pitsolve.models import ObservedModel
    from pitsolve.training.checkpoint import load_model

    model, _ = load_model(out / "model_best.npz")
    assert isinstance(model, ObservedModel) and model.state_dim == 2
    ev = run("evaluate", str(out / "model_best.npz"), "--data", str(series / "l63.npy"))
    assert ev.returncode == 0, ev.stderr
    sim = run("simulate", str(out / "model_best.npz"), "--steps", "50", "--out",
              str(tmp_path / "sim.npy"), "--x0", "0.1", "0.2", "0.3")
    assert sim.returncode == 0, sim.stderr
    assert np.load(tmp_path / "sim.npy").shape == (50, 3)  # the observations, not the latents


def test_identity_observation_needs_enough_latent_units():
    one_line_error(run("reconstruct", "--latent", "2", "--observation", "identity", *TINY),
                   "--latent 2 is less than the data dimension 3")


# -- the evaluation view of an affine observation ---------------------------------------------
def _observed(N=5, M=3):
    from pitsolve.models import Affine, ObservedModel, ShPLRNN

    return ObservedModel(ShPLRNN(M, 8, seed=1), Affine.init(N, M, seed=2))


def test_affine_view_jacobian_matches_finite_differences():
    from pitsolve.dsr.observed import observation_view

    view = observation_view(_observed())
    s = np.random.default_rng(0).normal(size=(4, view.state_dim))
    J, eps = view.jacobian(s), 1e-6
    for i in range(view.state_dim):
        e = np.zeros(view.state_dim)
        e[i] = eps
        np.testing.assert_allclose(J[..., i], (view.f(s + e) - view.f(s - e)) / (2 * eps),
                                   atol=1e-7)


def test_affine_view_starts_from_the_forcing_signal_and_keeps_the_exponent():
    from pitsolve.dsr import max_lyapunov
    from pitsolve.dsr.observed import AffineObservationView, observation_view

    model = _observed()
    view = observation_view(model)
    assert isinstance(view, AffineObservationView) and view.state_dim == 5 + 3
    x0 = np.random.default_rng(1).normal(size=5)
    traj = view.sequential(np.r_[x0, np.zeros(3)], None, 30)
    z = model.latent.sequential(model.observation.forcing_signal(x0), None, 30)
    np.testing.assert_allclose(traj[:, 5:], z)
    np.testing.assert_allclose(traj[:, :5], model.observation.observe(z))
    np.testing.assert_allclose(view.f(np.r_[x0, np.zeros(3)]), traj[0])
    h0 = np.r_[model.observation.observe(z[-1]), z[-1]]
    assert max_lyapunov(view, h0, T=500, transient=50).per_step == pytest.approx(
        max_lyapunov(model.latent, z[-1], T=500, transient=50).per_step, rel=1e-9)
    # the identity observation and plain models are measured as they are
    from pitsolve.models import Identity, ObservedModel

    assert observation_view(model.latent) is model.latent
    assert observation_view(ObservedModel(model.latent, Identity())) is model.latent
