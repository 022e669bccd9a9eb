"""``pitsolve reconstruct --seeds``: one run per seed, then the summary, its table and figure.

Each seed K runs exactly as ``pitsolve reconstruct ... --seed K --out OUT/seed-K`` would (the
single-run body of :mod:`pitsolve.cli`, passed in); then ``OUT/summary.json``
(:func:`pitsolve.dsr.seeds.summarize_seeds`), a table on stdout (one row per seed and the
median) and ``OUT/seeds.png`` (needs matplotlib).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .dsr.seeds import summarize_seeds

__all__ = ["run_seeds", "seeds_table"]


def shown(report: Mapping[str, Any]) -> str:
    """The evaluation the table and the figure show: the long free run when the reports
    have one (the reference figures), else the best model on the test series."""
    return "long" if "long" in report else "best"


RunOne = Callable[[argparse.Namespace], tuple[int, "dict[str, Any] | None"]]


def run_seeds(args: argparse.Namespace, run_one: RunOne, *, announce: bool = True) -> int:
    """Run ``run_one`` for every seed of ``args.seeds`` (a list) into ``args.out/seed-K``,
    then write and print the summary; returns the exit status (the first non-zero one of a
    run, e.g. 130 when interrupted).

    With ``args.resume`` each seed whose directory holds a checkpoint continues from it and
    the others start afresh; ``ValueError`` if no seed has a checkpoint. ``announce``: say
    on stderr which seed starts (False on MPI ranks other than 0).
    """
    out: Path = args.out
    seeds: list[int] = list(args.seeds)
    dirs = {k: out / f"seed-{k}" for k in seeds}
    if args.resume and not any((d / "checkpoint.npz").exists() for d in dirs.values()):
        listed = ", ".join(str(d) for d in dirs.values())
        raise ValueError(f"--resume: no checkpoint in any of {listed}")
    reports: dict[int, dict[str, Any]] = {}
    for i, seed in enumerate(seeds):
        run_args = argparse.Namespace(**{**vars(args), "seed": seed, "seeds": None,
                                         "out": dirs[seed]})
        resume_note = ""
        if args.resume and not (dirs[seed] / "checkpoint.npz").exists():
            run_args.resume, resume_note = False, " (no checkpoint: starting afresh)"
        if announce:
            print(f"pitsolve reconstruct: seed {seed} ({i + 1}/{len(seeds)}) into "
                  f"{dirs[seed]}{resume_note}", file=sys.stderr)
        status, report = run_one(run_args)
        if status != 0:
            return status
        if report is not None:
            reports[seed] = report
    if not reports:  # a rank other than 0 under mpiexec: rank 0 writes the summary
        return 0
    summary = summarize_seeds(reports)
    first = reports[seeds[0]]
    summary = {"command": "reconstruct --seeds", "data": first.get("data"),
               "lyapunov_truth_per_time": first.get("lyapunov_truth_per_time"),
               "shown": shown(first), **summary}
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=float))
    print(seeds_table(summary))
    fig = seeds_figure(out / "seeds.png", summary)
    print(f"wrote {out / 'summary.json'}"
          + (f", {out / 'seeds.png'}" if fig else " (install matplotlib for seeds.png)"))
    return 0


def _value(run: Mapping[str, Any], key: str, which: str) -> float:
    v = run.get(which, {}).get(key) if key != "wall_time_s" else run.get(key)
    return math.nan if v is None else float(v)


def seeds_table(summary: Mapping[str, Any]) -> str:
    """The table of a summary: one row per seed and the median of the shown evaluation's
    D_stsp, D_H, PE(20) and λ_max, and of the wall time (then the reference λ_max)."""
    cols = (("D_stsp", "D_stsp", "8.3f"), ("D_H", "D_H", "7.3f"), ("PE(20)", "PE", "9.2e"),
            ("λ_max/time", "lyap_per_time", "11.3f"), ("wall s", "wall_time_s", "7.0f"))

    def row(label: str, values: list[float]) -> str:
        cells = (f"{v:{fmt}}" for v, (_, _, fmt) in zip(values, cols, strict=True))
        return f"{label:8s} " + " ".join(cells)

    head = f"{'':8s} " + " ".join(f"{h:>{int(fmt.split('.')[0])}s}" for h, _, fmt in cols)
    which = summary.get("shown", "best")
    lines = [f"{which} evaluation of each of {len(summary['runs'])} seeds:", head]
    for seed, run in summary["runs"].items():
        lines.append(row(f"seed {seed}", [_value(run, key, which) for _, key, _ in cols]))
    stats = summary["summary"]

    def median(key: str) -> float:
        s = stats.get(key) if key == "wall_time_s" else stats.get(which, {}).get(key)
        return math.nan if not s else float(s["median"])

    lines.append(row("median", [median(key) for _, key, _ in cols]))
    truth = summary.get("lyapunov_truth_per_time")
    if truth is not None:
        lines.append(f"{'truth':8s} {'':8s} {'':7s} {'':9s} {truth:11.3f}")
    diverged = stats.get(which, {}).get("diverged", 0)
    if diverged:
        lines.append(f"{diverged} of {len(summary['runs'])} runs diverged (left out of the "
                     "median)")
    return "\n".join(lines)


def seeds_figure(path: Path, summary: Mapping[str, Any]) -> bool:
    """``D_stsp``, ``D_H`` and λ_max of every seed with their medians (and the reference
    λ_max); False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    seeds = list(summary["runs"])
    which = summary.get("shown", "best")
    panels = (("D_stsp", "$D_{stsp}$"), ("D_H", "$D_H$"),
              ("lyap_per_time", r"$\lambda_{max}$ per time unit"))
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for ax, (key, title) in zip(axes, panels, strict=True):
        values = [_value(summary["runs"][s], key, which) for s in seeds]
        ax.bar(range(len(seeds)), values, color="tab:blue", alpha=0.8)
        med = summary["summary"].get(which, {}).get(key, {}).get("median")
        if med is not None and math.isfinite(med):
            ax.axhline(med, color="k", ls="--", lw=1, label=f"median {med:.3g}")
        truth = summary.get("lyapunov_truth_per_time")
        if key == "lyap_per_time" and truth is not None:
            ax.axhline(truth, color="tab:red", lw=1.2, label=f"truth {truth:.3g}")
        ax.set_xticks(range(len(seeds)), [str(s) for s in seeds])
        ax.set_xlabel("seed")
        ax.set_title(title)
        ax.legend(fontsize=8)
    fig.suptitle(f"{summary.get('data')}: {which} evaluation of {len(seeds)} seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True
