"""The long-series claim (issue 15, part 4): GTF-DEER on the whole series against GTF-BPTT on
short windows, at equal wall time, on a system with a slow time scale.

    NUMBA_NUM_THREADS=1 python benchmarks/long_series.py [--budget 120] [--seeds 0 1 2]
        [--figure PATH] [--json PATH] [--trajectories NPZ] [--quick]
    python benchmarks/long_series.py --replot NPZ --figure PATH   # redraw the figure only

About 14 minutes with the defaults (2 methods × 3 seeds × 120 s, and the evaluations).

The system is ``lorenz63_drift``: Lorenz-63 whose ρ = 28 + 6 cos(2πt/100) is swept by a slow
oscillator (u, v) with a period P of 100 time units, 10⁴ samples at dt = 0.01. Only x, y, z are
observed; the slow phase is hidden. Training data: 10⁵ samples (10 slow periods, seed 1),
then 3·10⁴ held-out samples for model selection; test data: an independent series of 10⁵
samples (seed 2). All three are z-scored with the training series' mean and deviation.

Both methods train a shPLRNN (M = 5 latent units: the 3 observed ones, forced partially by
aGTF, and 2 free ones for the hidden phase; L = 50 hidden units) from the same initialisation
(``ShPLRNN(5, 50, seed=seed)``), with RAdam and an exponentially decaying learning rate
(lr → lr/100 over the run):

* **GTF-BPTT, windows**: ``solver=Sequential()``, ``seq_len=200``, ``batch_size=16``, lr 1e-3 —
  the standard setting of ``pitsolve reconstruct``. Every window starts its hidden units at 0,
  so nothing longer than 200 steps (2 time units) enters a gradient.
* **GTF-DEER, whole series**: ``solver=DEER()``, ``seq_len=None`` — every optimiser step runs
  the forced recurrence over all 10⁵ steps; the gradient sees the slow cycle. lr 1e-2 by
  default (``--deer-lr``): a full-series gradient is a full-batch gradient, and the run has
  a few hundred steps instead of tens of thousands.
* ``--methods ... bptt-whole`` adds GTF-BPTT on the whole series (``Sequential()``,
  ``seq_len=None``): DEER's gradient by the sequential loop, to tell the objective from the
  solver.

Equal wall time: each run gets ``--budget`` seconds of training (validation included,
compilation excluded — every kernel is compiled by a warm-up run first). A short timed
calibration run per method gives the seconds per optimiser step; the run then has
``budget / (seconds per step)`` steps in 20 epochs (the learning-rate schedule and aGTF's α
relaxation are laid over them: the decay of α per update is chosen so that α relaxes over the
same fraction of the run as in the standard 30 000-step setting, 0.998 per update over 6 000
updates), and a callback stops it once the budget is spent. The model of the epoch with the
best validation score (D_stsp + D_H of a free run against the 3·10⁴ held-out samples) is
evaluated on a free run of 1.25·10⁵ steps against the test series
(``evaluate(..., spectrum_segment=10_000)``: D_stsp, D_H, λ_max), and on the slow scale:

* ``slow z``: the power of z in the band 0.5/P … 1.5/P around the slow frequency 1/P (Welch,
  segments of 5·10⁴ samples) divided by the truth's (1 is right; 0: no slow cycle);
* ``slow x²``: the same for x², whose slow power is the modulation of the attractor's size
  and switching rate (x itself is odd: its envelope, not its mean, follows ρ).

Two reference rows give the scale of each measure: ``truth`` is another true series (seed 3)
against the test series — the floor that finite samples leave — and ``Lorenz-63, ρ = 28`` is
the unmodulated Lorenz-63 (seed 3, scaled like the data): a perfect reconstruction of the fast
dynamics that has no slow scale.

The table prints the median over seeds per method and every seed's row, with wall time,
optimiser steps, solver iterations per step (0 for the sequential loop), fallbacks and the
best epoch, and the ratio of each measure's median to GTF-BPTT's. ``--json`` writes
everything, ``--figure`` the spectra of z and x² (truth, the unmodulated Lorenz-63 and the
first seed's models) and 300 time units of x, ``--trajectories`` the figure's series.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numba
import numpy as np
from scipy import signal

import pitsolve as ps
from pitsolve.dsr.evaluate import evaluate, validation_score
from pitsolve.dsr.metrics import power_spectrum_distance, state_space_divergence
from pitsolve.training import optim

SYSTEM = "lorenz63_drift"
EPOCHS = 20  # validations per run
STANDARD_UPDATES = 6000  # aGTF updates of the standard run (30 000 steps, update_every 5)
STANDARD_DECAY = 0.998
SEGMENT = 10_000  # D_H segments, as pitsolve reconstruct's long evaluation


def data(T: int, n_val: int, n_test: int, observe: int) -> dict[str, Any]:
    """Training, held-out and test series, z-scored with the training series' moments, and
    the two reference series (another true series; Lorenz-63 at ρ = 28)."""
    info = ps.dsr.SYSTEMS[SYSTEM]
    raw = info.generate(T + n_val, seed=1, zscore=False)[:, :observe]
    mu, sd = raw[:T].mean(axis=0), raw[:T].std(axis=0)
    raw = (raw - mu) / sd
    test = (info.generate(n_test, seed=2, zscore=False)[:, :observe] - mu) / sd
    other = (info.generate(n_test, seed=3, zscore=False)[:, :observe] - mu) / sd
    references = {"truth (another series)": (other, info.lyapunov_max)}
    if observe == 3:
        plain = (ps.dsr.lorenz63(n_test, seed=3, zscore=False) - mu) / sd
        references["Lorenz-63, rho = 28"] = (plain, ps.dsr.SYSTEMS["lorenz63"].lyapunov_max)
    return {"train": raw[:T], "val": raw[T:], "test": test, "dt": info.dt,
            "period": info.params["period"], "lyap": info.lyapunov_max,
            "references": references}


def methods(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    every = {
        "bptt": ("GTF-BPTT, windows",
                 {"solver": ps.Sequential(), "seq_len": 200, "lr": args.bptt_lr}),
        "deer": ("GTF-DEER, whole series",
                 {"solver": ps.DEER(), "seq_len": None, "lr": args.deer_lr}),
        "bptt-whole": ("GTF-BPTT, whole series",
                       {"solver": ps.Sequential(), "seq_len": None, "lr": args.deer_lr}),
    }
    return dict(every[k] for k in args.methods)


def train(method: dict[str, Any], d: dict[str, Any], *, seed: int, steps: int, epochs: int,
          budget: float, args: argparse.Namespace, decay: float) -> dict[str, Any]:
    """One run of ``steps`` optimiser steps in ``epochs`` epochs, stopped after ``budget`` s."""
    model = ps.models.ShPLRNN(args.latent, args.hidden, seed=seed)
    per_epoch = max(1, steps // epochs)
    lr = optim.ExponentialDecay(lr_start=method["lr"], lr_end=method["lr"] * 1e-2,
                                steps=per_epoch * epochs)
    t0 = time.perf_counter()

    def out_of_time(info: dict[str, Any]) -> bool:
        return time.perf_counter() - t0 >= budget  # True stops fit after this epoch

    score = validation_score(d["val"], spectrum_segment=SEGMENT) if epochs > 1 else None
    res = ps.fit(model, d["train"], forcing=ps.GTF(alpha="adaptive", decay=decay),
                 solver=method["solver"], optimizer=optim.RAdam(lr=lr), epochs=epochs,
                 steps_per_epoch=per_epoch, seq_len=method["seq_len"], batch_size=16, seed=seed,
                 callbacks=[out_of_time], validate=score)
    wall = time.perf_counter() - t0
    n_steps = sum(s["steps"] for s in res.stats)
    return {"result": res, "wall": wall, "steps": n_steps, "steps_per_epoch": per_epoch,
            "iterations_per_step": sum(s["solver_iterations"] for s in res.stats) / n_steps,
            "fallbacks": sum(s.get("fallbacks", 0) for s in res.stats),
            "fallbacks_per_epoch": [s.get("fallbacks", 0) for s in res.stats],
            "iterations_per_epoch": [s["solver_iterations"] / s["steps"] for s in res.stats]}


def slow_power(series: np.ndarray, period_steps: float, nperseg: int) -> float:
    """A 1-D series' power (variance) in the band 0.5/P … 1.5/P (P in samples), Welch."""
    f, p = signal.welch(series - series.mean(), nperseg=nperseg)
    band = (f >= 0.5 / period_steps) & (f <= 1.5 / period_steps)
    return float(p[band].sum() * (f[1] - f[0]))


SLOW = {"slow_z": lambda s: s[:, 2], "slow_x2": lambda s: s[:, 0] ** 2}


def slow_measures(obs: np.ndarray, truth: np.ndarray, period_steps: float,
                  nperseg: int) -> dict[str, float]:
    """slow z and slow x²: the model's slow-band power over the truth's."""
    if not np.isfinite(obs).all():
        return {name: math.nan for name in SLOW}
    return {name: slow_power(fn(obs), period_steps, nperseg)
            / slow_power(fn(truth), period_steps, nperseg) for name, fn in SLOW.items()}


def reference_row(series: np.ndarray, lyap: float, d: dict[str, Any], period_steps: float,
                  nperseg: int) -> dict[str, Any]:
    """The measures of a true series against the test series (as evaluate computes them)."""
    test = d["test"]
    n = len(test) // SEGMENT
    d_h = (np.mean([power_spectrum_distance(test[k * SEGMENT:(k + 1) * SEGMENT],
                                            series[k * SEGMENT:(k + 1) * SEGMENT])
                    for k in range(n)]) if n > 1 else power_spectrum_distance(test, series))
    return {"D_stsp": state_space_divergence(test, series), "D_H": float(d_h), "lambda": lyap,
            **slow_measures(series, test, period_steps, nperseg)}


def calibrate(method: dict[str, Any], d: dict[str, Any], args: argparse.Namespace,
              steps: int) -> float:
    """Seconds per optimiser step, from a timed run of ``steps`` steps."""
    run = train(method, d, seed=0, steps=steps, epochs=1, budget=math.inf, args=args,
                decay=STANDARD_DECAY)
    return run["wall"] / run["steps"]


def validation_seconds(d: dict[str, Any], args: argparse.Namespace) -> float:
    score = validation_score(d["val"], spectrum_segment=SEGMENT)
    model = ps.models.ShPLRNN(args.latent, args.hidden, seed=0)
    score(model)
    t0 = time.perf_counter()
    score(model)
    return time.perf_counter() - t0


def figure(path: str, series: dict[str, np.ndarray], dt: float, period: float,
           nperseg: int) -> None:
    """Spectra of z and x² (truth, Lorenz-63 at ρ = 28, the models) and 300 time units of x;
    ``series``: the truth first, the reference ``plain``, then the models' free runs."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = dict(series)
    plain = series.pop("plain", None)
    truth = series["truth"]
    runs = [name for name in series if name != "truth"]
    palette = ("tab:orange", "tab:blue", "tab:green")
    colours = {"truth": "k", **dict(zip(runs, palette, strict=False))}
    fig = plt.figure(figsize=(9, 6.4), dpi=80)
    grid = fig.add_gridspec(2 + len(runs), 2, height_ratios=[2.2] + [1] * (1 + len(runs)))
    for col, (label, fn) in enumerate((("z", SLOW["slow_z"]), ("x²", SLOW["slow_x2"]))):
        ax = fig.add_subplot(grid[0, col])
        curves = [(name, s, colours[name], "-") for name, s in series.items()]
        if plain is not None:
            curves.insert(1, ("Lorenz-63, ρ = 28", plain, "0.55", "--"))
        floor = None
        for name, s, colour, style in curves:
            if not np.isfinite(s).all():
                continue
            f, p = signal.welch(fn(s) - fn(s).mean(), nperseg=nperseg)
            keep = (f > 0) & (f / dt <= 2.0)
            ax.loglog(f[keep] / dt, p[keep] * dt, color=colour, ls=style, lw=0.8, label=name)
            if name == "truth":
                floor = (p[keep] * dt).min() * 1e-3
        if floor is not None:
            ax.set_ylim(bottom=floor)
        ax.axvline(1 / period, color="0.6", ls=":", lw=1)
        ax.set_xlabel("frequency (1 / time unit)")
        ax.set_title(f"power spectrum of {label} (slow frequency 1/P dotted)", fontsize=9)
        if col == 0:
            ax.legend(fontsize=7, loc="lower left")
    n = min(int(300 / dt), len(truth))
    t = np.arange(n) * dt
    for row, (name, s) in enumerate(series.items()):
        ax = fig.add_subplot(grid[1 + row, :])
        ax.plot(t[::2], s[:n:2, 0], color=colours[name], lw=0.3)
        ax.set_ylabel("x", fontsize=8)
        ax.text(0.005, 0.85, name, transform=ax.transAxes, fontsize=8)
        ax.set_ylim(-3.5, 3.5)
        ax.tick_params(labelsize=7)
        if row < len(series) - 1:
            ax.set_xticklabels([])
    ax.set_xlabel("time units (truth: the test series; models: free run of the first seed's "
                  "best model)")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    print(f"wrote {path}")


def fmt(v: float | None, spec: str) -> str:
    return "nan" if v is None or not math.isfinite(v) else format(v, spec)


COLUMNS = (("D_stsp", "D_stsp", ".3f"), ("D_H", "D_H", ".3f"), ("lambda", "λ_max", ".3f"),
           ("slow_z", "slow z", ".3f"), ("slow_x2", "slow x²", ".3f"))


def table(rows: dict[str, list[dict[str, Any]]],
          references: dict[str, dict[str, Any]]) -> None:
    print(f"{'':24s} {'seed':>4s} " + " ".join(f"{c[1]:>7s}" for c in COLUMNS)
          + f" {'wall s':>7s} {'steps':>6s} {'it/step':>7s} {'fallb.':>6s} {'best ep':>7s}")
    for name, ref in references.items():
        print(f"{name:24s} {'':>4s} " + " ".join(f"{fmt(ref[k], s):>7s}" for k, _, s in COLUMNS))
    base = None
    for name, runs in rows.items():
        med = {k: statistics.median([r[k] for r in runs if math.isfinite(r[k])] or [math.nan])
               for k, _, _ in COLUMNS}
        print(f"{name:24s} {'med':>4s} "
              + " ".join(f"{fmt(med[k], s):>7s}" for k, _, s in COLUMNS)
              + f" {statistics.median(r['wall'] for r in runs):7.1f}"
              f" {statistics.median(r['steps'] for r in runs):6.0f}"
              f" {statistics.median(r['iterations_per_step'] for r in runs):7.2f}")
        for r in runs:
            print(f"{'':24s} {r['seed']:4d} "
                  + " ".join(f"{fmt(r[k], s):>7s}" for k, _, s in COLUMNS)
                  + f" {r['wall']:7.1f} {r['steps']:6d} {r['iterations_per_step']:7.2f}"
                  f" {r['fallbacks']:6d} {r['best_epoch']:7d}")
        if base is None:
            base, base_name = med, name
        else:
            print(f"{'  ratio to ' + base_name:29s} "
                  + " ".join(f"{fmt(med[k] / base[k] if base[k] else math.nan, '.3g'):>7s}"
                             for k, _, _ in COLUMNS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=120.0,
                        help="training seconds per run (default 120)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["bptt", "deer"],
                        choices=["bptt", "deer", "bptt-whole"],
                        help="bptt: GTF-BPTT on windows (the baseline, first); deer: GTF-DEER "
                        "on the whole series; bptt-whole: GTF-BPTT on the whole series (the "
                        "same gradient as deer, by the sequential loop)")
    parser.add_argument("--T", type=int, default=100_000, help="training samples")
    parser.add_argument("--observe", type=int, default=3, choices=[3, 5],
                        help="observed columns: 3 (x, y, z; default) or 5 (also u, v)")
    parser.add_argument("--latent", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=50)
    parser.add_argument("--bptt-lr", type=float, default=1e-3)
    parser.add_argument("--deer-lr", type=float, default=1e-2,
                        help="initial learning rate of the whole-series methods")
    parser.add_argument("--threads", type=int, default=1, help="Numba threads (default 1)")
    parser.add_argument("--figure", default=None, help="write the figure here (png)")
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--trajectories", default=None,
                        help="write the figure's series here (.npz), for --replot")
    parser.add_argument("--replot", default=None, metavar="NPZ",
                        help="only draw --figure from a --trajectories file")
    parser.add_argument("--quick", action="store_true",
                        help="T = 2e4, 2e4 test samples, a 15 s budget, one seed: a smoke test")
    args = parser.parse_args()
    if args.replot:
        with np.load(args.replot) as f:
            meta = json.loads(str(f["meta"]))
            series = {k: f[k] for k in meta["order"]}
        figure(args.figure, series, meta["dt"], meta["period"], meta["nperseg"])
        return
    if args.quick:
        args.T, args.budget, args.seeds = 20_000, 15.0, args.seeds[:1]
    if args.latent < args.observe:
        parser.error(f"--latent must be at least --observe {args.observe}")
    numba.set_num_threads(args.threads)
    load = ", ".join(f"{v:.1f}" for v in os.getloadavg())
    print(f"Numba threads {numba.get_num_threads()}, load average {load}")
    n_test = 20_000 if args.quick else 100_000
    d = data(args.T, 30_000, n_test, args.observe)
    period_steps = d["period"] / d["dt"]
    nperseg = min(50_000, n_test // 2)
    band = [slow_power(fn(d["test"]), period_steps, nperseg) / fn(d["test"]).var()
            for fn in SLOW.values()]
    print(f"{SYSTEM}: T = {args.T} training samples ({args.T / period_steps:.0f} slow periods "
          f"of {period_steps:.0f} samples), {args.observe} observed columns, M = {args.latent}, "
          f"L = {args.hidden}; budget {args.budget:.0f} s per run, seeds {args.seeds}; the "
          f"slow band holds {band[0]:.1%} of z's and {band[1]:.1%} of x²'s variance")
    references = {name: reference_row(s, lyap, d, period_steps, nperseg)
                  for name, (s, lyap) in d["references"].items()}

    specs = methods(args)
    t_val = validation_seconds(d, args)
    plan = {}
    for name, m in specs.items():
        cal_steps = 30 if m["seq_len"] else 3
        calibrate(m, d, args, 2)  # warm-up: compiles every kernel the run needs
        per_step = calibrate(m, d, args, cal_steps)
        steps = max(EPOCHS, int((args.budget - EPOCHS * t_val) / per_step))
        plan[name] = {"seconds_per_step": per_step, "steps": steps,
                      "agtf_decay": STANDARD_DECAY ** (STANDARD_UPDATES / (steps / 5))}
        print(f"{name}: {per_step:.3f} s per step -> {steps} steps, aGTF decay "
              f"{plan[name]['agtf_decay']:.4f} per update; validation {t_val:.2f} s")

    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in specs}
    first: dict[str, np.ndarray] = {}
    for seed in args.seeds:
        for name, m in specs.items():
            run = train(m, d, seed=seed, steps=plan[name]["steps"], epochs=EPOCHS,
                        budget=args.budget, args=args, decay=plan[name]["agtf_decay"])
            res = run["result"]
            ev = evaluate(res.best_model, d["test"], dt=d["dt"], lyapunov_steps=20_000,
                          seed=seed, keep_trajectory=True, spectrum_segment=SEGMENT)
            slow = slow_measures(ev.generated, d["test"], period_steps, nperseg)
            row = {"seed": seed, "D_stsp": ev.D_stsp, "D_H": ev.D_H, "PE": ev.PE,
                   "lambda": ev.lyap_per_time if ev.lyap_per_time is not None else math.nan,
                   **slow, "diverged": ev.diverged, "wall": run["wall"], "steps": run["steps"],
                   "iterations_per_step": run["iterations_per_step"],
                   "iterations_per_epoch": run["iterations_per_epoch"],
                   "fallbacks": run["fallbacks"], "fallbacks_per_epoch": run["fallbacks_per_epoch"],
                   "best_epoch": res.best_epoch, "epochs": res.epochs, "stopped": res.stopped,
                   "alpha_history": res.alpha_history, "loss_history": res.loss_history,
                   "validation": res.validation_history}
            rows[name].append(row)
            print(f"  seed {seed} {name}: {run['wall']:.0f} s, {run['steps']} steps, "
                  f"{run['iterations_per_step']:.2f} iterations/step, {run['fallbacks']} "
                  f"fallbacks, α {res.alpha_history[-1]:.3f}, best epoch {res.best_epoch}/"
                  f"{res.epochs}: D_stsp {ev.D_stsp:.3f}, D_H {ev.D_H:.3f}, λ "
                  f"{row['lambda']:.3f}, slow z {slow['slow_z']:.3f}, slow x² "
                  f"{slow['slow_x2']:.3f}", flush=True)
            if seed == args.seeds[0]:
                first[name] = ev.generated
    print()
    table(rows, references)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"system": SYSTEM, "args": vars(args), "plan": plan,
                       "validation_seconds": t_val, "slow_band_fraction": band,
                       "references": references, "runs": rows}, fh, indent=1, default=float)
        print(f"wrote {args.json}")
    series = {"truth": d["test"], **first}
    if "Lorenz-63, rho = 28" in d["references"]:
        series["plain"] = d["references"]["Lorenz-63, rho = 28"][0]
    if args.trajectories:
        meta = {"order": list(series), "dt": d["dt"], "period": d["period"], "nperseg": nperseg}
        np.savez_compressed(args.trajectories, meta=json.dumps(meta), **series)
        print(f"wrote {args.trajectories}")
    if args.figure:
        figure(args.figure, series, d["dt"], d["period"], nperseg)


if __name__ == "__main__":
    sys.exit(main())
