"""Benchmark the CPU scan kernels against each other and against a memory-bandwidth floor.

Usage::

    python benchmarks/scan.py            # T in {1e4, 1e5, 1e6}, D in {1, 4, 16, 64}
    python benchmarks/scan.py --quick    # T in {1e4, 1e5}, D in {1, 4}: a smoke check
    python benchmarks/scan.py --contracting-only   # only the strongly contracting table

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

A second table times *strongly contracting* maps, batch 1, T = 1e6, forward (``fwd``) and
reverse (``rev``, ``scan_blocked_reverse`` against ``scan_sequential_reverse``): diagonal
``A_t ~ U(0.5, 0.99)`` (D = 1 in float64 and float32, D = 4), and dense ``A_t = diag(a_t)``
with ``a_t ~ U(0.5, 0.99)`` stored as (D, D) matrices (D = 4).  There the transfer maps of the
blocked scan (products of ~T/C maps) fall below the smallest normal number: unflushed, they
sink to the smallest subnormal and stay there (``x * 0.99`` rounds back to ``x``), and
subnormal arithmetic is slow; the kernels flush them to zero below ``tiny * 2**20``.  Columns
``numba``, ``numba1``, ``seq``, ``forced`` and ``add`` as above (``seq`` in the scan's
direction); ratios to the sequential loop ``par/seq = numba / seq``, ``1t/seq = numba1 /
seq`` and ``frc/seq = forced / seq``, and ``scan/add``.  Every case is timed ``--rounds``
times, the variants interleaved, and the median of the rounds' medians is printed (the
2-thread timings wait for the slower thread, so a busy core shows up in them first).
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


def _numba_times(A, b, h0, cs, n_threads, reverse=False):
    """``(numba, numba1, seq, forced)`` in ms: the default chunk size on all threads, chunk
    size ``cs`` on one thread, the sequential loop, ``C = threads + 1`` chunks forced."""
    T = b.shape[1]
    if reverse:
        blocked = partial(numba_scan.scan_blocked_reverse, A, b)
        seq = partial(numba_scan.scan_sequential_reverse, A, b)
    else:
        blocked = partial(numba_scan.scan_blocked, A, b, h0)
        seq = partial(numba_scan.scan_sequential, A, b, h0)
    t2 = _timeit(blocked)
    numba.set_num_threads(1)
    try:
        t1 = _timeit(partial(blocked, chunk_size=cs))
    finally:
        numba.set_num_threads(n_threads)
    tseq = _timeit(seq)
    cs_forced = -(-T // (n_threads + 1))
    tforced = t2 if cs_forced == cs else _timeit(partial(blocked, chunk_size=cs_forced))
    return t2, t1, tseq, tforced


def _add_floor(A, b):
    """The ``numpy.add`` floor (ms) for a scan that reads ``A`` and ``b`` (module docstring)."""
    n_add = (A.size + b.size) // 2
    x = np.ones(n_add, dtype=b.dtype)
    y = np.ones(n_add, dtype=b.dtype)
    z = np.ones(n_add, dtype=b.dtype)
    return _timeit(partial(np.add, x, y, out=z))


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
    t2, t1, tseq, tforced = _numba_times(A, b, h0, cs, n_threads)

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

    tadd = _add_floor(A, b)

    return (
        f"{tag} {C:>3} | {_fmt(t2)} {_fmt(t1)} {_fmt(tseq)} {_fmt(tforced)} {_fmt(tnp)} "
        f"{_fmt(tlog)} {_fmt(tadd)} | {_fmt(_ratio(t2, tadd), 8, 2)} "
        f"{_fmt(_ratio(t2, tseq), 8, 2)} {_fmt(_ratio(t1, t2), 8, 2)} "
        f"{_fmt(_ratio(tnp, t2), 8, 1)} {_fmt(_ratio(tnp, tforced), 8, 1)}"
    )


def _contracting_maps(kind, T, D, dtype, rng):
    """``(A, b, h0)``: ``A_t ~ U(0.5, 0.99)`` on the diagonal, float ``dtype``, batch 1."""
    a = rng.uniform(0.5, 0.99, (1, T, D))
    if kind == "dense":
        A = np.zeros((1, T, D, D))
        A[:, :, np.arange(D), np.arange(D)] = a
    else:
        A = a
    b = rng.standard_normal((1, T, D))
    h0 = rng.standard_normal((1, D))
    return A.astype(dtype), b.astype(dtype), h0.astype(dtype)


#: (kind, T, D, dtype, reverse) of the strongly contracting table
CONTRACTING = [
    ("diag", 10**6, 1, np.float64, False),
    ("diag", 10**6, 1, np.float64, True),
    ("diag", 10**6, 1, np.float32, False),
    ("diag", 10**6, 1, np.float32, True),
    ("diag", 10**6, 4, np.float64, False),
    ("dense", 10**6, 4, np.float64, False),
    ("dense", 10**6, 4, np.float64, True),
]


def run_contracting(n_threads, rounds=3):
    """The strongly contracting table (module docstring), ``rounds`` interleaved rounds."""
    header = (
        f"{'kind':>5} {'T':>7} {'D':>3} {'dtype':>7} {'dir':>3} {'C':>3} | {'numba':>9} "
        f"{'numba1':>9} {'seq':>9} {'forced':>9} {'add':>9} | {'par/seq':>8} {'1t/seq':>8} "
        f"{'frc/seq':>8} {'scan/add':>8}"
    )
    print(f"\nstrongly contracting maps, A_t ~ U(0.5, 0.99), median of {rounds} rounds")
    print(header)
    print("-" * len(header), flush=True)
    rng = np.random.default_rng(1)
    cases = []
    for kind, T, D, dt, reverse in CONTRACTING:
        cs = numba_scan.default_chunk_size(T, 1, D=D, dense=kind == "dense" and D > 1)
        tag = (
            f"{kind:>5} {T:>7.0e} {D:>3} {np.dtype(dt).name:>7} {'rev' if reverse else 'fwd':>3} "
            f"{-(-T // cs):>3}"
        )
        cases.append((tag, _contracting_maps(kind, T, D, dt, rng), cs, reverse, []))
    for _ in range(rounds):
        for _, (A, b, h0), cs, reverse, samples in cases:
            samples.append((*_numba_times(A, b, h0, cs, n_threads, reverse), _add_floor(A, b)))
    for tag, _, _, _, samples in cases:
        t2, t1, tseq, tforced, tadd = (statistics.median(s[i] for s in samples) for i in range(5))
        print(
            f"{tag} | {_fmt(t2)} {_fmt(t1)} {_fmt(tseq)} {_fmt(tforced)} {_fmt(tadd)} | "
            f"{_fmt(_ratio(t2, tseq), 8, 2)} {_fmt(_ratio(t1, tseq), 8, 2)} "
            f"{_fmt(_ratio(tforced, tseq), 8, 2)} {_fmt(_ratio(t2, tadd), 8, 2)}",
            flush=True,
        )


def _preamble(msg=None):
    """Print the versions (and ``msg``), compile (or load) the kernels; returns the thread
    count."""
    n_threads = numba.get_num_threads()
    print(
        f"numba {numba.__version__}, numpy {np.__version__}, threads {n_threads}, "
        f"threading layer: {numba.config.THREADING_LAYER}"
    )
    if msg:
        print(msg)
    print("compiling / loading cached kernels ...", flush=True)
    _compile_all()
    return n_threads


def run(Ts, Ds, kinds=("diag", "dense")):
    np_blocked, np_logdepth, np_msg = _numpy_twins()
    n_threads = _preamble(np_msg)
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
    return n_threads


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="only T in {1e4, 1e5} and D in {1, 4} (smoke check)"
    )
    parser.add_argument(
        "--contracting-only", action="store_true", help="only the strongly contracting table"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="rounds of the strongly contracting table (3)"
    )
    args = parser.parse_args(argv)
    if args.contracting_only:
        n_threads = _preamble()
    elif args.quick:
        n_threads = run([10**4, 10**5], [1, 4])
    else:
        n_threads = run([10**4, 10**5, 10**6], [1, 4, 16, 64])
    run_contracting(n_threads, max(1, args.rounds))


if __name__ == "__main__":
    main()
