"""Benchmark the CPU scan kernels against each other and against a memory-bandwidth floor.

Usage::

    python benchmarks/scan.py            # T in {1e4, 1e5, 1e6}, D in {1, 4, 16, 64}
    python benchmarks/scan.py --quick    # T in {1e4, 1e5}, D in {1, 4}: a smoke check

Every case is a forward scan ``h_t = A_t h_{t-1} + b_t``, float64, batch B = 1, with a
diagonal ``A`` of shape (1, T, D) or a dense ``A`` of shape (1, T, D, D).  Columns (times in
milliseconds, the median of several runs after a warm-up call; fewer runs for big sizes):

``numba``
    ``pitsolve.kernels.numba_scan.scan_blocked`` with the default chunk size and Numba's
    default thread count (``numba.get_num_threads()``, 2 on the dev machine).  ``C`` is the
    number of chunks that the default chunk size gives (1 means one chunk per batch element,
    i.e. the kernel runs the plain recurrence).
``numba1``
    the same call with ``numba.set_num_threads(1)`` and the *same* chunk size, so
    ``t1/t2 = numba1 / numba`` is the speed-up the second thread buys for that algorithm.
``seq``
    ``numba_scan.scan_sequential``: the plain loop, one thread.
``forced``
    ``scan_blocked`` with ``C = threads + 1`` chunks forced (the blocked algorithm even
    where the default declines to split time, e.g. dense maps on 2 threads, whose O(D^3)
    transfer-map products cost more than a second thread saves).
``np-blk`` / ``logdepth``
    the NumPy twins ``pitsolve.kernels.numpy_scan.scan_blocked`` (its own default chunk
    size) and ``scan_logdepth``; ``n/a`` when that module cannot be imported, ``skip`` when
    the case would take too long or need too much memory (the reason is printed below the
    table).
``add``
    the bandwidth floor ``numpy.add(x, y, out=z)`` with float64 arrays ``x``, ``y``, ``z``
    each of ``(A.nbytes + b.nbytes) / 2`` bytes, allocated and touched once up front.  It
    reads exactly the bytes one pass of the scan must read (``A`` and ``b``) and writes
    ``(A.nbytes + b.nbytes) / 2`` bytes, which is the scan's output size for diagonal ``A``
    (more than the output for dense ``A``).  It is single-threaded and writes into an
    existing array, whereas every scan allocates its output (``np.empty``) and so also pays
    for the first touch (page faults and zeroing) of fresh memory.

Ratios: ``scan/add = numba / add``; ``par/seq = numba / seq`` (below 1: the blocked scan
beats the plain loop); ``t1/t2 = numba1 / numba``; ``np/nb = np-blk / numba``;
``np/frc = np-blk / forced``.

Cases whose ``A`` would exceed 1.5 GB are skipped ("skipped: memory").
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

try:
    from pitsolve.kernels import numba_scan
except ImportError:  # running from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from pitsolve.kernels import numba_scan

import numba

MAX_A_BYTES = 1.5e9
# Cost caps for the NumPy twins (rough operation counts; beyond them a case takes many seconds).
NP_BLOCKED_DENSE_MAX = 3e9  # T * D^3: the transfer-map products
LOGDEPTH_DENSE_MAX = 2e10  # T * D^3 * log2(T)
LOGDEPTH_MAX_BYTES = 4e9  # the log-depth scan keeps ~6 copies of (A, b) alive


def _numpy_twins():
    try:
        from pitsolve.kernels import numpy_scan
    except Exception as exc:  # the module is written separately; keep going without it
        return None, None, f"numpy twins n/a ({type(exc).__name__}: {exc})"
    return numpy_scan.scan_blocked, numpy_scan.scan_logdepth, None


def _timeit(fn, *, warm=True, budget=1.5, max_rep=15, min_rep=3):
    """Median wall time in ms: optional warm-up call, then repeats within ~budget seconds."""
    if warm:
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
        samples = []
    else:  # nothing to warm up (NumPy): the first call is a valid sample
        t0 = time.perf_counter()
        fn()
        first = time.perf_counter() - t0
        samples = [first]
    if first > budget:
        rep = 1 if warm else 0
    else:
        rep = max(min_rep, min(max_rep, int(budget / max(first, 1e-6))))
    for _ in range(rep):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(samples)


def _compile_all():
    """Trigger JIT compilation (or load the cache) on tiny inputs, outside the timings."""
    for dense in (False, True):
        A = np.full((1, 8, 2, 2) if dense else (1, 8, 2), 0.5)
        b = np.ones((1, 8, 2))
        h0 = np.zeros((1, 2))
        numba_scan.scan_blocked(A, b, h0, chunk_size=3)
        numba_scan.scan_sequential(A, b, h0)


def _fmt(x, width=9, prec=3):
    if isinstance(x, str):
        return x.rjust(width)
    return f"{x:{width}.{prec}f}"


def _ratio(a, b):
    if isinstance(a, str) or isinstance(b, str) or b == 0:
        return "-"
    return a / b


def _case(kind, T, D, rng, np_blocked, np_logdepth, n_threads, notes):
    """Time one case; returns the table row (a string)."""
    dense = kind == "dense"
    a_shape = (1, T, D, D) if dense else (1, T, D)
    a_bytes = 8 * math.prod(a_shape)
    tag = f"{kind:>5} {T:>7.0e} {D:>3}"
    if a_bytes > MAX_A_BYTES:
        return f"{tag}   - | skipped: memory (A would be {a_bytes / 1e9:.1f} GB)"
    # |A| entries <= 1/D (dense) or <= 1 (diagonal) keep the recurrence bounded
    A = rng.uniform(-1.0, 1.0, a_shape) / (D if dense else 1)
    b = rng.standard_normal((1, T, D))
    h0 = rng.standard_normal((1, D))
    where = f"{kind} T={T:.0e} D={D}"

    # what scan_blocked picks (a dense 1x1 map runs the diagonal kernels)
    cs = numba_scan.default_chunk_size(T, 1, D=D, dense=dense and D > 1)
    C = -(-T // cs)
    t2 = _timeit(partial(numba_scan.scan_blocked, A, b, h0))
    numba.set_num_threads(1)
    try:
        t1 = _timeit(partial(numba_scan.scan_blocked, A, b, h0, chunk_size=cs))
    finally:
        numba.set_num_threads(n_threads)
    tseq = _timeit(partial(numba_scan.scan_sequential, A, b, h0))
    cs_forced = -(-T // (n_threads + 1))
    if cs_forced == cs:
        tforced = t2
    else:
        tforced = _timeit(partial(numba_scan.scan_blocked, A, b, h0, chunk_size=cs_forced))

    if np_blocked is None:
        tnp = "n/a"
    elif dense and T * D**3 > NP_BLOCKED_DENSE_MAX:
        tnp = "skip"
        notes.append(
            f"{where}: np-blk skipped, too slow "
            f"(T*D^3 = {T * D**3:.1e} > {NP_BLOCKED_DENSE_MAX:.0e})"
        )
    else:
        tnp = _timeit(partial(np_blocked, A, b, h0), warm=False, budget=2.0)

    if np_logdepth is None:
        tlog = "n/a"
    elif dense and T * D**3 * math.log2(T) > LOGDEPTH_DENSE_MAX:
        tlog = "skip"
        notes.append(
            f"{where}: logdepth skipped, too slow "
            f"(T*D^3*log2(T) = {T * D**3 * math.log2(T):.1e} > {LOGDEPTH_DENSE_MAX:.0e})"
        )
    elif 6 * (A.nbytes + b.nbytes) > LOGDEPTH_MAX_BYTES:
        tlog = "skip"
        notes.append(
            f"{where}: logdepth skipped, memory "
            f"(~{6 * (A.nbytes + b.nbytes) / 1e9:.1f} GB of temporaries)"
        )
    else:
        tlog = _timeit(partial(np_logdepth, A, b, h0), warm=False, budget=2.0)

    n_add = (A.size + b.size) // 2
    x = np.ones(n_add)
    y = np.ones(n_add)
    z = np.ones(n_add)
    tadd = _timeit(partial(np.add, x, y, out=z))

    return (
        f"{tag} {C:>3} | {_fmt(t2)} {_fmt(t1)} {_fmt(tseq)} {_fmt(tforced)} {_fmt(tnp)} "
        f"{_fmt(tlog)} {_fmt(tadd)} | {_fmt(_ratio(t2, tadd), 8, 2)} "
        f"{_fmt(_ratio(t2, tseq), 8, 2)} {_fmt(_ratio(t1, t2), 8, 2)} "
        f"{_fmt(_ratio(tnp, t2), 8, 1)} {_fmt(_ratio(tnp, tforced), 8, 1)}"
    )


def run(Ts, Ds, kinds=("diag", "dense")):
    np_blocked, np_logdepth, np_msg = _numpy_twins()
    n_threads = numba.get_num_threads()
    print(
        f"numba {numba.__version__}, numpy {np.__version__}, threads {n_threads}, "
        f"threading layer: {numba.config.THREADING_LAYER}"
    )
    if np_msg:
        print(np_msg)
    print("compiling / loading cached kernels ...", flush=True)
    _compile_all()
    header = (
        f"{'kind':>5} {'T':>7} {'D':>3} {'C':>3} | {'numba':>9} {'numba1':>9} {'seq':>9} "
        f"{'forced':>9} {'np-blk':>9} {'logdepth':>9} {'add':>9} | {'scan/add':>8} "
        f"{'par/seq':>8} {'t1/t2':>8} {'np/nb':>8} {'np/frc':>8}"
    )
    print(header)
    print("-" * len(header), flush=True)
    notes = []
    rng = np.random.default_rng(0)
    for kind in kinds:
        for D in Ds:
            for T in Ts:
                row = _case(kind, T, D, rng, np_blocked, np_logdepth, n_threads, notes)
                print(row, flush=True)
    for note in notes:
        print("note:", note)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="only T in {1e4, 1e5} and D in {1, 4} (smoke check)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        run([10**4, 10**5], [1, 4])
    else:
        run([10**4, 10**5, 10**6], [1, 4, 16, 64])


if __name__ == "__main__":
    main()
