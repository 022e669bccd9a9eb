"""Reconstruction quality of ``pitsolve reconstruct`` over seeds: the reference table (issue 15).

Usage::

    python benchmarks/reconstruct.py                       # lorenz63, seeds 0-4, its recipe
    python benchmarks/reconstruct.py rossler lorenz96 --seeds 0-4
    python benchmarks/reconstruct.py dysts:Lorenz --seeds 0-2 -- --epochs 20
    python benchmarks/reconstruct.py --from runs/lorenz63  # table of finished runs only

For each system it runs ``pitsolve reconstruct SYSTEM --seeds SEEDS --out DIR/SYSTEM`` (its
recipe, plus any flags after ``--``) unless ``DIR/SYSTEM/summary.json`` exists already, and
prints one row per system: the median and range over the seeds of the **long free run**
(the best model's 10⁵ steps against an independent true series — the reference figures of a
run; ``long`` in ``report.json``) for D_stsp, D_H (mean over 10⁴-step segments) and
λ_max per time unit against the reference, the number of runs whose λ_max is within 10 % of
it, the median wall time of a run, and the baseline a perfect model would score: D_stsp and
D_H between two independent true series of the same length (seeds 7 and 8), so that every
figure is read against the sampling noise of the measure itself.

Targets for Lorenz-63 (issue 15): median D_stsp ≤ 0.4, D_H ≤ 0.05, λ_max within 10 % of
0.906, no seed above D_stsp 1.0.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np


def _baseline(name: str, steps: int) -> tuple[float, float]:
    """D_stsp and D_H (10⁴-step segments) between two independent true series."""
    from pitsolve.dsr.evaluate import _segment_spectrum_distance
    from pitsolve.dsr.metrics import state_space_divergence
    from pitsolve.dsr.recipes import recipe
    from pitsolve.dsr.systems import dysts_system, from_dysts, system

    if name.startswith("dysts:"):
        info = dysts_system(name[6:])
        a, b = (from_dysts(info.name, T=steps, dt=info.dt, seed=s) for s in (7, 8))
    else:
        params = dict(recipe(name).system_params)
        a, b = (system(name).generate(T=steps, seed=s, **params) for s in (7, 8))
    return (float(state_space_divergence(a, b)),
            _segment_spectrum_distance(a, b, min(10_000, steps)))


def _row(name: str, summary: dict) -> str:
    runs = summary["runs"]
    which = summary.get("shown", "best")
    truth = summary.get("lyapunov_truth_per_time")

    def values(key: str) -> np.ndarray:
        return np.array([r.get(which, {}).get(key, math.nan) if key != "wall_time_s"
                         else r.get(key, math.nan) for r in runs.values()], dtype=float)

    def cell(v: np.ndarray, fmt: str) -> str:
        v = v[np.isfinite(v)]
        if not v.size:
            return "—"
        return f"{np.median(v):{fmt}} [{v.min():{fmt}}–{v.max():{fmt}}]"

    lyap = values("lyap_per_time")
    within = (f"{int(np.sum(np.abs(lyap / truth - 1) <= 0.1))}/{len(lyap)}"
              if truth else "—")
    steps = int(summary["runs"][next(iter(runs))].get("config", {}).get("long_run", 100_000)
                or 100_000)
    base_d, base_h = _baseline(name, steps)
    return (f"| {name} | {len(runs)} | {cell(values('D_stsp'), '.2f')} | "
            f"{cell(values('D_H'), '.3f')} | {cell(lyap, '.3f')} | "
            f"{'—' if truth is None else f'{truth:.4g}'} | {within} | "
            f"{np.nanmedian(values('wall_time_s')):.0f} s | {base_d:.3f} / {base_h:.3f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("systems", nargs="*", default=["lorenz63"])
    parser.add_argument("--seeds", default="0-4")
    parser.add_argument("--dir", type=Path, default=Path("runs"))
    parser.add_argument("--from", dest="only", action="store_true",
                        help="do not run: tabulate the summaries in --dir")
    argv = sys.argv[1:]
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    extra = argv[cut + 1:]  # reconstruct flags after --
    rows = []
    for name in args.systems:
        out = args.dir / name.replace(":", "-")
        if not (out / "summary.json").exists():
            if args.only:
                sys.exit(f"no {out / 'summary.json'}")
            cmd = [sys.executable, "-m", "pitsolve", "reconstruct", name, "--seeds", args.seeds,
                   "--quiet", "--out", str(out), *extra]
            print("$", " ".join(cmd[2:]), file=sys.stderr)
            subprocess.run(cmd, check=True)
        summary = json.loads((out / "summary.json").read_text())
        for seed, run in summary["runs"].items():  # each run's config, for the long-run length
            report = json.loads((out / f"seed-{seed}" / "report.json").read_text())
            run["config"] = report["config"]
        rows.append(_row(name, summary))
    print("| system | seeds | D_stsp (long) median [range] | D_H | λ_max per time | truth | "
          "λ within 10 % | wall time | true vs true D_stsp / D_H |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
