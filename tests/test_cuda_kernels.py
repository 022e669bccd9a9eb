"""The CUDA kernels, checked without a GPU (issue 13).

* every registered kernel compiles to PTX for sm_80 and sm_90 (no driver needed), and the
  registry holds exactly the kernels listed here;
* under Numba's CUDA simulator (marker ``cudasim``, run with ``NUMBA_ENABLE_CUDASIM=1``;
  ``test_the_simulated_suite_passes`` starts that run from a plain ``pytest``), every kernel
  equals its NumPy twin on small cases — odd T, T = 1, block edges, chunk lengths 1..64,
  float32/64, NaN — and solves on CuPy arrays (the stand-in) run on the kernels end to end.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import pitsolve as ps
from pitsolve.kernels import numpy_scan, residual, update
from pitsolve.kernels.cuda import registry
from pitsolve.testing import cudasim, fake_cupy

HAS_NUMBA_CUDA = importlib.util.find_spec("numba_cuda") is not None
SIMULATING = registry.simulating()
needs_simulator = pytest.mark.skipif(
    not SIMULATING, reason="runs under NUMBA_ENABLE_CUDASIM=1 (test_the_simulated_suite_passes)"
)
if SIMULATING:
    cudasim.prepare()

#: Every CUDA kernel of pitsolve. A kernel missing here fails test_every_kernel_compiles.
KERNELS = [
    "cuda.lookback.diag_lookback",
    "cuda.reductions.nonfinite_kernel",
    "cuda.reductions.residual_kernel",
    "cuda.reductions.step_kernel",
    "cuda.scan.dense_apply",
    "cuda.scan.dense_carries",
    "cuda.scan.dense_reduce",
    "cuda.scan.diag_apply",
    "cuda.scan.diag_carries",
    "cuda.scan.diag_reduce",
    "plrnn._cuda.alrnn_kernel",
    "plrnn._cuda.shplrnn_kernel",
    "rnn._cuda.elman_kernel",
    "rnn._cuda.gru_kernel",
]


@pytest.mark.skipif(not HAS_NUMBA_CUDA or SIMULATING, reason="needs numba-cuda, no simulator")
def test_every_kernel_compiles_to_ptx_for_sm80_and_sm90():
    from numba import cuda

    found = registry.kernels()
    assert sorted(found) == KERNELS, "a kernel was added or removed: update KERNELS"
    compiled = []
    for name, kernel in sorted(found.items()):
        assert {s.split("(")[1].split("[")[0] for s in kernel.signatures} == {"float32",
                                                                              "float64"}
        for sig in kernel.signatures:
            for cc in ((8, 0), (9, 0)):
                ptx, _ = cuda.compile_ptx(kernel.dispatcher.py_func, sig, cc=cc)
                assert f".target sm_{cc[0]}{cc[1]}" in ptx and ".entry" in ptx
                compiled.append((name, sig, cc))
    print(f"compiled {len(compiled)} kernels x signatures x architectures")
    assert len(compiled) == 4 * len(KERNELS)


@pytest.mark.slow
@pytest.mark.skipif(not HAS_NUMBA_CUDA or SIMULATING, reason="needs numba-cuda, no simulator")
def test_the_simulated_suite_passes():
    """Plain ``pytest`` runs the ``cudasim`` tests too: in a child process with the simulator on
    (it must be set before ``numba.cuda`` is imported)."""
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "NUMBA_ENABLE_CUDASIM": "1"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "cudasim", "-p", "no:cacheprovider",
         str(Path(__file__).relative_to(root))],
        cwd=root, env=env, capture_output=True, text=True, timeout=1200,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    assert " passed" in run.stdout and " skipped" not in run.stdout.splitlines()[-1]


# -- under the simulator ------------------------------------------------------------------------

_TOL = {np.float32: 2e-4, np.float64: 1e-11}


def _maps(rng, dense, B, T, D, dtype):
    shape = (B, T, D, D) if dense else (B, T, D)
    scale = 1 / np.sqrt(D) if dense else 1.0
    A = (rng.uniform(-1.1, 1.1, shape) * scale).astype(dtype)
    return A, rng.normal(size=(B, T, D)).astype(dtype), rng.normal(size=(B, D)).astype(dtype)


@pytest.mark.cudasim
@needs_simulator
@settings(max_examples=40, deadline=None)
@given(dense=st.booleans(), B=st.integers(1, 3), T=st.integers(1, 40), D=st.integers(1, 4),
       chunk=st.one_of(st.none(), st.integers(1, 64)), f32=st.booleans(), seed=st.integers(0, 99))
def test_scans_equal_the_loop(dense, B, T, D, chunk, f32, seed):
    from pitsolve.kernels.cuda import scan

    dtype = np.float32 if f32 else np.float64
    A, b, h0 = _maps(np.random.default_rng(seed), dense, B, T, D, dtype)
    tol = _TOL[dtype]
    fwd = scan.scan_blocked(A, b, h0, chunk_size=chunk)
    assert fwd.dtype == dtype
    np.testing.assert_allclose(fwd, numpy_scan.scan_loop(A, b, h0), rtol=tol, atol=tol)
    rev = scan.scan_blocked_reverse(A, b, chunk_size=chunk)
    np.testing.assert_allclose(rev, numpy_scan.scan_loop_reverse(A, b), rtol=tol, atol=tol)


@pytest.mark.cudasim
@needs_simulator
@settings(max_examples=15, deadline=None)
@given(B=st.integers(1, 2), T=st.integers(1, 300), D=st.integers(1, 3), f32=st.booleans(),
       seed=st.integers(0, 99))
def test_the_one_pass_scan_equals_the_loop(B, T, D, f32, seed):
    """The decoupled look-back (tiles of 8 threads x 8 steps here: up to 5 tiles per lane),
    forward and transposed; the default of diagonal scans without a chunk size."""
    from pitsolve.kernels.cuda import lookback, scan

    dtype = np.float32 if f32 else np.float64
    A, b, h0 = _maps(np.random.default_rng(seed), False, B, T, D, dtype)
    tol = _TOL[dtype]
    fwd = lookback.scan_lookback(A, b, h0, False)
    np.testing.assert_allclose(fwd, numpy_scan.scan_loop(A, b, h0), rtol=tol, atol=tol)
    np.testing.assert_array_equal(scan.scan_blocked(A, b, h0), fwd)  # the default route
    rev = lookback.scan_lookback(A, b, np.zeros_like(h0), True)
    np.testing.assert_allclose(rev, numpy_scan.scan_loop_reverse(A, b), rtol=tol, atol=tol)


@pytest.mark.cudasim
@needs_simulator
def test_the_one_pass_scan_propagates_nan_and_flushes():
    from pitsolve.kernels.cuda import lookback

    A, b, h0 = _maps(np.random.default_rng(7), False, 1, 150, 2, np.float64)
    b[0, 100, 1] = np.nan
    out = lookback.scan_lookback(A, b, h0, False)
    assert np.isfinite(out[0, :100]).all() and np.isfinite(out[0, :, 0]).all()
    assert np.isnan(out[0, 100:, 1]).all()
    A = np.full_like(A, 1e-200)
    b = np.ones_like(b)
    np.testing.assert_allclose(lookback.scan_lookback(A, b, h0, False),
                               numpy_scan.scan_loop(A, b, h0), rtol=1e-14)


@pytest.mark.cudasim
@needs_simulator
@pytest.mark.parametrize("dense", [False, True])
def test_many_chunks_take_the_recursive_carries(dense, monkeypatch):
    from pitsolve.kernels.cuda import scan

    monkeypatch.setattr(scan, "_SEQUENTIAL_CARRIES", 2)
    A, b, h0 = _maps(np.random.default_rng(3), dense, 2, 47, 2, np.float64)
    for chunk in (1, 2, 5):  # 47, 24 and 10 chunks: two and three levels
        np.testing.assert_allclose(scan.scan_blocked(A, b, h0, chunk_size=chunk),
                                   numpy_scan.scan_loop(A, b, h0), rtol=1e-12)
        np.testing.assert_allclose(scan.scan_blocked_reverse(A, b, chunk_size=chunk),
                                   numpy_scan.scan_loop_reverse(A, b), rtol=1e-12)


@pytest.mark.cudasim
@needs_simulator
@pytest.mark.parametrize("D", [33, 64])
def test_dense_scans_up_to_the_largest_state(D):
    from pitsolve.kernels.cuda import scan

    A, b, h0 = _maps(np.random.default_rng(D), True, 1, 5, D, np.float64)
    np.testing.assert_allclose(scan.scan_blocked(A, b, h0, chunk_size=2),
                               numpy_scan.scan_loop(A, b, h0), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(scan.scan_blocked_reverse(A, b, chunk_size=3),
                               numpy_scan.scan_loop_reverse(A, b), rtol=1e-11, atol=1e-12)
    A, b, h0 = _maps(np.random.default_rng(0), True, 1, 6, 65, np.float64)  # the array code
    np.testing.assert_allclose(scan.scan_blocked(A, b, h0, chunk_size=4),
                               numpy_scan.scan_loop(A, b, h0), rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(scan.scan_blocked_reverse(A, b),
                               numpy_scan.scan_loop_reverse(A, b), rtol=1e-11, atol=1e-12)


@pytest.mark.cudasim
@needs_simulator
@pytest.mark.parametrize("dense", [False, True])
def test_scans_propagate_nan_and_flush_contracting_products(dense):
    from pitsolve.kernels.cuda import scan

    A, b, h0 = _maps(np.random.default_rng(4), dense, 1, 30, 2, np.float64)
    b[0, 11, 1] = np.nan
    out = scan.scan_blocked(A, b, h0, chunk_size=4)
    assert np.isfinite(out[0, :11]).all() and np.isnan(out[0, 11:]).any()
    assert np.isnan(out[0, 11:]).any(axis=-1).all() if not dense else np.isnan(out[0, 12:]).all()
    # strongly contracting: every product below tiny after a few steps, no subnormal result
    A = np.full_like(A, 1e-120)
    out = scan.scan_blocked(A, np.ones_like(b), h0, chunk_size=7)
    np.testing.assert_allclose(out, numpy_scan.scan_loop(A, np.ones_like(b), h0), rtol=1e-14)


@pytest.mark.cudasim
@needs_simulator
@settings(max_examples=25, deadline=None)
@given(B=st.integers(1, 3), T=st.integers(1, 30), D=st.integers(1, 3), f32=st.booleans(),
       nan=st.booleans(), write=st.booleans(), seed=st.integers(0, 99))
def test_reductions_equal_their_twins(B, T, D, f32, nan, write, seed):
    from pitsolve.kernels.cuda import reductions

    rng = np.random.default_rng(seed)
    dtype = np.float32 if f32 else np.float64
    h = rng.normal(size=(B, T, D)).astype(dtype)
    f = (h + rng.choice([1e-6, 1e-2], size=h.shape) * rng.normal(size=h.shape)).astype(dtype)
    if nan:
        h[rng.integers(B), rng.integers(T), rng.integers(D)] = np.nan
    out, ref_out = (np.empty_like(h), np.empty_like(h)) if write else (None, None)
    got = reductions.residual_norms(h, f, 1e-4, 1e-3, out)
    want = residual.residual_norms_xp(h, f, 1e-4, 1e-3, ref_out)
    np.testing.assert_allclose(got[0], want[0], rtol=1e-6)  # NaN where NaN
    np.testing.assert_allclose(got[1], want[1], rtol=1e-5)
    assert got[2] == want[2]
    if write:
        np.testing.assert_array_equal(out, ref_out)
    assert reductions.all_finite(h) == update.all_finite_xp(h)
    d = rng.normal(size=h.shape).astype(dtype)
    assert reductions.step_size(h, d) == update.step_size_xp(h, d)
    h2 = h.copy()
    assert reductions.apply_step(h, d) == update.apply_step_xp(h2, d)
    np.testing.assert_array_equal(h, h2)


def _numpy_model(model):
    return model.on("numpy")


@pytest.mark.cudasim
@needs_simulator
@pytest.mark.parametrize("model", [
    ps.models.ShPLRNN(3, 7, seed=1), ps.models.ClippedShPLRNN(4, 6, seed=2),
    ps.models.ALRNN(4, 2, seed=3), ps.models.ALRNN(3, 0, seed=3),
    ps.models.Elman(3, 2, seed=1), ps.models.GRU(3, 2, seed=1), ps.models.GRU(2, seed=4),
], ids=lambda m: f"{type(m).__name__}-{m.state_dim}")
@pytest.mark.parametrize("f32", [False, True])
def test_model_kernels_equal_the_array_code(model, f32):
    rng = np.random.default_rng(5)
    dtype = np.float32 if f32 else np.float64
    model = model.astype(dtype) if hasattr(model, "astype") else model
    h = rng.normal(size=(2, 5, model.state_dim)).astype(dtype)
    x = rng.normal(size=(2, 5, model.input_dim)).astype(dtype) if model.input_dim else None
    tol = _TOL[dtype]
    ref = _numpy_model(model)
    with fake_cupy.installed() as cp:
        gpu = model.on("cupy")
        assert gpu.backend.cuda
        xd = None if x is None else cp.asarray(x)
        pairs = [(gpu.f_and_jacobian(cp.asarray(h), xd), ref.f_and_jacobian(h, x)),
                 (gpu.f_and_diagonal_jacobian(cp.asarray(h), xd),
                  ref.f_and_diagonal_jacobian(h, x)),
                 ((gpu.f(cp.asarray(h), xd),), (ref.f(h, x),))]
        for got, want in pairs:
            for g, w in zip(got, want, strict=True):
                assert g.dtype == w.dtype
                np.testing.assert_allclose(g.get(), w, rtol=tol, atol=tol)


@pytest.mark.cudasim
@needs_simulator
@pytest.mark.parametrize("alg", [ps.DEER(), ps.DEER(jacobian="diagonal"),
                                 ps.DEER(damping=ps.LevenbergMarquardt()),
                                 ps.NewtonKrylov(), ps.Schwarz(windows=2, overlap=4)], ids=repr)
@pytest.mark.parametrize("name", ["shplrnn", "clipped", "alrnn", "elman", "gru"])
def test_solves_and_gradients_run_on_the_kernels(name, alg):
    """A solve on (stand-in) CuPy arrays runs the CUDA kernels end to end and gives the NumPy
    backend's trajectory and gradient."""
    rng = np.random.default_rng(0)
    model = {"shplrnn": ps.models.ShPLRNN(3, 8, seed=1),
             "clipped": ps.models.ClippedShPLRNN(3, 8, seed=1),
             "alrnn": ps.models.ALRNN(3, 2, seed=1),
             "elman": ps.models.Elman(4, 2, seed=1), "gru": ps.models.GRU(3, 2, seed=1)}[name]
    T = 13
    h0 = 0.1 * rng.normal(size=model.state_dim)
    x = rng.normal(size=(T, model.input_dim)) if model.input_dim else None
    ref = ps.solve(ps.RecurrenceProblem(model, h0, inputs=x, T=None if x is not None else T),
                   alg, backend="numpy", rtol=1e-10, atol=1e-12)
    g = rng.normal(size=ref.states.shape)
    ref_cot = ref.vjp(g)
    with fake_cupy.installed() as cp:
        dev = ps.RecurrenceProblem(model, cp.asarray(h0),
                                   inputs=None if x is None else cp.asarray(x),
                                   T=None if x is not None else T)
        sol = ps.solve(dev, alg, rtol=1e-10, atol=1e-12)
        assert ps.is_successful(sol) and sol.backend.cuda
        np.testing.assert_allclose(sol.states.get(), ref.states, rtol=1e-9, atol=1e-11)
        cot = sol.vjp(cp.asarray(g))
        np.testing.assert_allclose(cot.params.flatten().get(), ref_cot.params.flatten(),
                                   rtol=1e-7, atol=1e-9)
        np.testing.assert_allclose(cot.h0.get(), ref_cot.h0, rtol=1e-7, atol=1e-9)


# -- on a real device (marker gpu; skipped without one) -----------------------------------------
needs_device = pytest.mark.skipif(
    SIMULATING or not (ps.backends.has_cupy() and HAS_NUMBA_CUDA and registry.available()),
    reason="needs CuPy, numba-cuda and a CUDA device",
)


@pytest.mark.gpu
@needs_device
@pytest.mark.parametrize("f32", [False, True])
@pytest.mark.parametrize(("dense", "B", "T", "D", "chunk"), [
    (False, 1, 1_000_003, 1, None), (False, 3, 100_001, 4, None), (False, 2, 50_001, 40, None),
    (False, 1, 100_001, 2, 64), (True, 1, 100_001, 3, None), (True, 4, 10_001, 16, 7),
])
def test_device_scans_equal_the_compiled_loop(dense, B, T, D, chunk, f32):
    import cupy

    from pitsolve.kernels import affine_scan, affine_scan_transpose

    dtype = np.float32 if f32 else np.float64
    A, b, h0 = _maps(np.random.default_rng(1), dense, B, T, D, dtype)
    A *= 0.99  # stable over 10^6 steps in float32
    tol = 1e-3 if f32 else 1e-9
    got = affine_scan(*(cupy.asarray(x) for x in (A, b, h0)), kernel="cuda", chunk_size=chunk)
    want = affine_scan(A, b, h0, kernel="numba-sequential")
    np.testing.assert_allclose(got.get(), want, rtol=tol, atol=tol)
    lam, _ = affine_scan_transpose(cupy.asarray(A), cupy.asarray(b), kernel="cuda",
                                   chunk_size=chunk)
    np.testing.assert_allclose(lam.get(), affine_scan_transpose(A, b, kernel="numba-sequential")[0],
                               rtol=tol, atol=tol)


@pytest.mark.gpu
@needs_device
@pytest.mark.parametrize("alg", [ps.DEER(), ps.DEER(jacobian="diagonal"),
                                 ps.DEER(damping=ps.LevenbergMarquardt()), ps.NewtonKrylov()],
                         ids=repr)
@pytest.mark.parametrize("name", ["shplrnn_3x50", "gru_64", "elman_256"])
def test_device_solves_equal_the_cpu(name, alg):
    import cupy

    from pitsolve.testing import problems

    model, h0, x = getattr(problems, name)(T=20_000)
    T = None if x is not None else 20_000
    tol = {"rtol": 1e-10, "atol": 1e-12}
    ref = ps.solve(ps.RecurrenceProblem(model, h0, inputs=x, T=T), alg, **tol)
    sol = ps.solve(ps.RecurrenceProblem(model, cupy.asarray(h0), inputs=None if x is None
                                        else cupy.asarray(x), T=T), alg, **tol)
    assert ps.is_successful(sol) and sol.backend.cuda and sol.retcode == ref.retcode
    np.testing.assert_allclose(sol.states.get(), ref.states, rtol=1e-6, atol=1e-8)
    g = np.random.default_rng(2).normal(size=ref.states.shape)
    np.testing.assert_allclose(sol.vjp(cupy.asarray(g)).params.flatten().get(),
                               ref.vjp(g).params.flatten(), rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(not HAS_NUMBA_CUDA or SIMULATING, reason="needs numba-cuda, no simulator")
@pytest.mark.parametrize("ptr", [0, 1234])
def test_device_launches_use_cupys_stream_without_syncing(monkeypatch, ptr):
    """The device path of ``launch`` (never run here): CuPy arrays become Numba views with
    ``sync=False`` and the launch goes to CuPy's current stream (its null stream: Numba's
    default stream), on a grid of (blocks, rows) x THREADS."""
    import types

    from numba import cuda

    calls = {}
    fake_cupy_module = types.SimpleNamespace(cuda=types.SimpleNamespace(
        get_current_stream=lambda: types.SimpleNamespace(ptr=ptr)))
    monkeypatch.setitem(sys.modules, "cupy", fake_cupy_module)
    monkeypatch.setattr(registry, "simulating", lambda: False)
    monkeypatch.setattr(cuda, "as_cuda_array", lambda x, sync=True: ("view", x, sync))
    monkeypatch.setattr(cuda, "external_stream", lambda p: ("external", p))
    monkeypatch.setattr(cuda, "default_stream", lambda: "default")

    class Array:
        __cuda_array_interface__ = None  # (only its presence counts)

    class Kernel:
        py_func = types.SimpleNamespace(__name__="k")

        def __getitem__(self, config):
            calls["config"] = config
            return lambda *args: calls.setdefault("args", args)

    a = Array()
    registry.launch(Kernel(), 300, a, 3, rows=2)
    grid, threads, stream = calls["config"]
    assert grid == (-(-300 // registry.THREADS), 2) and threads == registry.THREADS
    assert stream == ("default" if ptr == 0 else ("external", ptr))
    assert calls["args"] == (("view", a, False), 3)
