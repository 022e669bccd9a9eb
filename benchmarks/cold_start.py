"""The first minute (issue 15): the default ``pitsolve reconstruct`` from an empty kernel cache
against the same run with every kernel cached, in fresh processes.

Usage::

    python benchmarks/cold_start.py              # the default run (T = 1e5, the full schedule)
    python benchmarks/cold_start.py --quick      # 2 epochs: compilation against a short run
    python benchmarks/cold_start.py -- --solver sequential   # extra reconstruct flags

Each run is ``python -m pitsolve reconstruct --quiet --out TMP ...`` with ``NUMBA_CACHE_DIR``
pointing at a fresh directory (cold: a fresh install, nothing compiled) and then at the same,
now filled, directory (warm: every later run). Columns: wall time of the process, the kernels
compiled and the seconds spent compiling (``report.json``'s ``compile``), training time, and the
ratio cold / warm. Targets on the 2-core machine: cold ≤ 150 s, warm ≤ 120 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(cache: Path, out: Path, extra: list[str]) -> dict:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache)}
    cmd = [sys.executable, "-m", "pitsolve", "reconstruct", "--quiet", "--out", str(out), *extra]
    t0 = time.perf_counter()
    res = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"reconstruct failed ({res.returncode}):\n{res.stderr[-3000:]}")
    report = json.loads((out / "report.json").read_text())
    return {"wall": wall, "report": report}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 epochs instead of the default")
    parser.add_argument("extra", nargs="*", help="more reconstruct flags (after --)")
    args = parser.parse_args()
    extra = (["--epochs", "2"] if args.quick else []) + args.extra
    with tempfile.TemporaryDirectory() as tmp:
        cache = Path(tmp) / "numba-cache"
        cache.mkdir()
        rows = {name: run(cache, Path(tmp) / name, extra) for name in ("cold", "warm")}
    print(f"pitsolve reconstruct {' '.join(extra)} (NUMBA_NUM_THREADS="
          f"{os.environ.get('NUMBA_NUM_THREADS', 'all')}, {os.cpu_count()} CPUs)")
    print(f"{'cache':6s} {'wall s':>8s} {'kernels':>8s} {'compile s':>10s} {'train s':>8s} "
          f"{'D_stsp':>7s} {'D_H':>6s}")
    for name, r in rows.items():
        rep = r["report"]
        comp = rep.get("compile", {})
        long = rep.get("long", rep["best"])
        print(f"{name:6s} {r['wall']:8.1f} {comp.get('kernels', 0):8d} "
              f"{comp.get('seconds', 0.0):10.1f} {rep['train_time_s']:8.1f} "
              f"{long['D_stsp']:7.3f} {long['D_H']:6.3f}")
    print(f"cold / warm wall time: {rows['cold']['wall'] / rows['warm']['wall']:.2f}")


if __name__ == "__main__":
    main()
