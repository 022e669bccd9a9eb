"""Multi-seed runs: the list of seeds, and the summary of the runs' reports.

``pitsolve reconstruct --seeds 0-4`` runs the whole job once per seed and summarises the
reports with :func:`summarize_seeds`: for every evaluation in a report (every mapping with a
``D_stsp`` key, found at any depth, e.g. ``best`` and ``final``) and for every top-level number
(wall time, best epoch, ...), the median, the median absolute deviation (MAD), the minimum and
the maximum over the seeds. Diverged runs are counted and left out of the statistics, as
:func:`~pitsolve.dsr.evaluate.summarize` does; measure keys are read from the reports, not
fixed here, so new evaluations and measures are summarised as they appear.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
from typing import Any

import numpy as np

from .evaluate import summarize

__all__ = ["evaluations", "parse_seeds", "summarize_seeds"]


def parse_seeds(spec: str) -> list[int]:
    """The seeds of ``spec``: ``"3"``, ``"0,2,5"``, ``"0-4"`` (inclusive), or a mix
    (``"0-2,7"``), non-negative integers, each at most once, in the order given.

    Raises
    ------
    ValueError
        For an empty spec, a non-integer or negative item, a decreasing range or a repeated
        seed, naming the offending item.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("expected seeds such as 3, 0,2,5 or 0-4, got an empty list")
    seeds: list[int] = []
    for item in spec.split(","):
        item = item.strip()
        lo, dash, hi = item.partition("-")
        try:
            first = int(lo)
            last = int(hi) if dash else first
        except ValueError:
            raise ValueError(f"{item!r} is not a seed (an integer ≥ 0) or a range A-B of seeds; "
                             "use e.g. 3, 0,2,5 or 0-4") from None
        if first < 0 or last < 0:
            raise ValueError(f"seeds must be integers ≥ 0, got {item!r}")
        if last < first:
            raise ValueError(f"the range {item!r} is empty: write it as {last}-{first}")
        for seed in range(first, last + 1):
            if seed in seeds:
                raise ValueError(f"seed {seed} is given twice")
            seeds.append(seed)
    return seeds


def evaluations(report: Mapping[str, Any], prefix: str = "") -> dict[str, Mapping[str, Any]]:
    """The evaluations in a report: every mapping with a ``D_stsp`` key, at any depth (not
    inside ``config``), by its dotted path (``"best"``, ``"long_run.best"``)."""
    found: dict[str, Mapping[str, Any]] = {}
    for key, value in report.items():
        if not isinstance(value, Mapping) or (not prefix and key == "config"):
            continue
        path = f"{prefix}{key}"
        if "D_stsp" in value:
            found[path] = value
        else:
            found.update(evaluations(value, f"{path}."))
    return found


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _flat_measures(ev: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """The numbers of an evaluation (None kept: undefined), nested mappings flattened to
    dotted keys, and its ``diverged`` flag."""
    out: dict[str, Any] = {}
    for key, value in ev.items():
        if key == "diverged" and not prefix:
            out["diverged"] = bool(value)
        elif isinstance(value, Mapping):
            out.update(_flat_measures(value, f"{prefix}{key}."))
        elif value is None or _is_number(value):
            out[f"{prefix}{key}"] = value
    return out


def _statistics(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """:func:`summarize` of the rows (every key in every row), with min and max added."""
    keys = list(dict.fromkeys(k for r in rows for k in r))
    rows = [{k: r.get(k) for k in keys} for r in rows]
    out = summarize(rows)
    kept = [r for r in rows if not r.get("diverged")]
    for key in keys:
        if key == "diverged":
            continue
        vals = np.array([r[key] for r in kept if r[key] is not None], dtype=float)
        vals = vals[np.isfinite(vals)]
        out[key]["min"] = float(vals.min()) if vals.size else math.nan
        out[key]["max"] = float(vals.max()) if vals.size else math.nan
    return out


def summarize_seeds(reports: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """The summary of one report per seed (``{seed: report}``, reports as ``report.json``).

    Returns
    -------
    ``{"seeds": [...], "runs": {seed: {evaluation: measures, number: value}},
    "summary": {evaluation: {"runs", "diverged", measure: {"median", "mad", "min", "max",
    "n"}}, number: {"median", "mad", "min", "max", "n"}}}``, where *evaluation* ranges over
    :func:`evaluations` of the reports (``best``, ``final``, ...) and *number* over their
    top-level numbers (``wall_time_s``, ``best_epoch``, ...); JSON-ready (NaN where no run
    is finite).
    """
    if not reports:
        raise ValueError("reports must hold at least one run")
    seeds = list(reports)
    evals = {seed: evaluations(r) for seed, r in reports.items()}
    names = list(dict.fromkeys(n for e in evals.values() for n in e))
    numbers_ = list(dict.fromkeys(k for r in reports.values() for k, v in r.items()
                                  if _is_number(v)))
    runs: dict[str, dict[str, Any]] = {}
    for seed, report in reports.items():
        run: dict[str, Any] = {n: dict(evals[seed][n]) for n in names if n in evals[seed]}
        run.update({k: report[k] for k in numbers_ if k in report})
        runs[str(seed)] = run
    summary: dict[str, Any] = {}
    for name in names:
        rows = [_flat_measures(evals[s][name]) for s in seeds if name in evals[s]]
        summary[name] = _statistics(rows)
    for key in numbers_:
        stats = _statistics([{key: r.get(key)} for r in reports.values()])
        summary[key] = stats[key]
    return {"seeds": seeds, "runs": runs, "summary": summary}
