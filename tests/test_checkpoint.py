"""Checkpoints: bitwise round trips, exact RNG resume, and atomicity under crashes and SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import pitsolve as ps
from pitsolve.models.base import Params
from pitsolve.training import checkpoint
from pitsolve.training.checkpoint import (
    META_KEY,
    load_checkpoint,
    restore_rng,
    rng_state,
    save_checkpoint,
)
from pitsolve.training.optim import OptimizerState, RAdam


def sample_arrays():
    rng = np.random.default_rng(0)
    nan_payload = np.array([np.nan, -np.nan, 1.0]).view(np.uint64)
    nan_payload[0] |= 0x5  # a NaN with a non-default payload must survive bit for bit
    return {
        "params/W1": rng.standard_normal((4, 3)),
        "params/h": rng.standard_normal(5).astype(np.float32),
        "fortran": np.asfortranarray(rng.standard_normal((3, 2))),
        "strided": np.arange(20.0)[::3],
        "step": np.asarray(17, dtype=np.int64),
        "mask": np.array([True, False, True]),
        "bytes": np.arange(7, dtype=np.uint8),
        "complex": np.array([1 + 2j, -3j]),
        "empty": np.zeros((0, 4)),
        "nan": nan_payload.view(np.float64),
        "file": np.ones(2),  # a name that numpy.savez could not take as a keyword
    }


def assert_same(a, b):
    assert set(a) == set(b)
    for k in a:
        x, y = np.asarray(a[k]), b[k]
        assert x.dtype == y.dtype and x.shape == y.shape, k
        assert x.tobytes() == y.tobytes(), k


def listing(directory):
    return sorted(os.listdir(directory))


# -- round trips ------------------------------------------------------------------------------
def test_round_trip_arrays_meta_and_rng(tmp_path):
    gen = np.random.default_rng(123)
    gen.standard_normal(10)  # advance somewhere into the stream
    meta = {
        "epoch": 3,
        "loss_history": [1.5, 0.25, float("nan"), float("inf")],
        "name": "shPLRNN – Lorenz-63",
        "big": 2**100 + 1,
        "nested": {"alpha": 0.2, "ok": True, "none": None},
        "rng": rng_state(gen),
    }
    json.dumps(meta)  # the RNG state really is JSON
    arrays = sample_arrays()
    path = tmp_path / "deep" / "dir" / "ckpt.npz"  # parents are created
    save_checkpoint(path, arrays, meta)
    expected_draws = gen.standard_normal(1000)

    loaded, meta2 = load_checkpoint(str(path))
    assert_same(arrays, loaded)
    assert META_KEY not in loaded
    assert meta2["loss_history"][:2] == [1.5, 0.25] and np.isnan(meta2["loss_history"][2])
    assert {k: v for k, v in meta2.items() if k != "loss_history"} == {
        k: v for k, v in meta.items() if k != "loss_history"
    }
    resumed = restore_rng(meta2["rng"])
    assert np.array_equal(resumed.standard_normal(1000), expected_draws)
    assert listing(path.parent) == ["ckpt.npz"]
    # an ordinary .npz: numpy reads it too
    with np.load(path) as z:
        assert json.loads(str(z[META_KEY]))["epoch"] == 3


@pytest.mark.parametrize("bit_generator", ["PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"])
def test_rng_state_every_bit_generator(bit_generator):
    gen = np.random.Generator(getattr(np.random, bit_generator)(7))
    gen.random(5)
    gen.integers(0, 10, size=3)  # leaves buffered bits in some generators
    state = json.loads(json.dumps(rng_state(gen)))
    again = restore_rng(state)
    assert np.array_equal(again.integers(0, 2**62, size=100), gen.integers(0, 2**62, size=100))
    assert np.array_equal(again.random(50), gen.random(50))


def test_rng_state_errors():
    with pytest.raises(TypeError, match="Generator"):
        rng_state(np.random.RandomState(0))
    with pytest.raises(ValueError, match="bit generator"):
        restore_rng({"bit_generator": "NoSuchGenerator", "state": {}})
    with pytest.raises(ValueError, match="rng_state"):
        restore_rng({"state": 1})


def test_optimizer_state_through_a_checkpoint(tmp_path):
    rng = np.random.default_rng(1)
    params = Params(W=rng.standard_normal((3, 3)), b=rng.standard_normal(3))
    opt = RAdam(lr=1e-2)
    state = opt.init(params)

    def grads(p):
        return p.map(lambda a: a**3 - 0.5)

    for _ in range(7):
        params, state = opt.update(params, grads(params), state)
    arrays = {**{f"params/{k}": v for k, v in params.items()}, **state.to_arrays(prefix="opt/")}
    save_checkpoint(tmp_path / "run.ckpt", arrays, {"epoch": 7})
    loaded, meta = load_checkpoint(tmp_path / "run.ckpt")
    params2 = Params({k: loaded[f"params/{k}"] for k in params})
    state2 = OptimizerState.from_arrays(loaded, params2, prefix="opt/")
    for _ in range(5):
        params, state = opt.update(params, grads(params), state)
        params2, state2 = opt.update(params2, grads(params2), state2)
    assert params.flatten().tobytes() == params2.flatten().tobytes()
    assert state.step == state2.step == 12 and meta == {"epoch": 7}


def test_overwrite_keeps_permissions(tmp_path):
    path = tmp_path / "c.npz"
    save_checkpoint(path, {"a": np.zeros(1)}, {})
    if os.name == "posix":
        assert os.stat(path).st_mode & 0o777 == 0o644
        os.chmod(path, 0o600)
        save_checkpoint(path, {"a": np.ones(1)}, {})
        assert os.stat(path).st_mode & 0o777 == 0o600
    assert load_checkpoint(path)[0]["a"][0] == 1.0 or os.name != "posix"


def test_invalid_input_writes_nothing(tmp_path):
    path = tmp_path / "c.npz"
    with pytest.raises(TypeError, match="JSON"):
        save_checkpoint(path, {"a": np.zeros(2)}, {"bad": object()})
    with pytest.raises(ValueError, match="reserved"):
        save_checkpoint(path, {META_KEY: np.zeros(2)}, {})
    with pytest.raises(TypeError, match="object"):
        save_checkpoint(path, {"a": np.array([None, 1])}, {})
    with pytest.raises(TypeError, match="names"):
        save_checkpoint(path, {3: np.zeros(1)}, {})
    assert listing(tmp_path) == []


# -- crashes while writing --------------------------------------------------------------------
def old_checkpoint(tmp_path):
    path = tmp_path / "ckpt.npz"
    arrays = {"x": np.full(1000, 1.0), "y": np.arange(10)}
    save_checkpoint(path, arrays, {"version": "old"})
    return path, arrays


def assert_old_intact(path, arrays):
    loaded, meta = load_checkpoint(path)
    assert_same(arrays, loaded)
    assert meta == {"version": "old"}
    assert listing(path.parent) == [path.name], "a temporary file was left behind"


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_crash_at_rename_leaves_old_checkpoint(tmp_path, monkeypatch, error):
    path, arrays = old_checkpoint(tmp_path)

    def failing_replace(src, dst):
        raise error

    monkeypatch.setattr(checkpoint.os, "replace", failing_replace)
    with pytest.raises(type(error)):
        save_checkpoint(path, {"x": np.full(1000, 2.0)}, {"version": "new"})
    monkeypatch.undo()
    assert_old_intact(path, arrays)


def test_crash_midway_through_the_file_leaves_old_checkpoint(tmp_path, monkeypatch):
    path, arrays = old_checkpoint(tmp_path)
    real_write = np.lib.format.write_array
    calls = []

    def write_then_fail(fp, array, *args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the first array is on disk, the second half-written
            fp.write(b"\x93NUMPY partial")
            raise OSError("I/O error")
        return real_write(fp, array, *args, **kwargs)

    monkeypatch.setattr(np.lib.format, "write_array", write_then_fail)
    with pytest.raises(OSError, match="I/O error"):
        save_checkpoint(path, {"x": np.full(1000, 2.0), "y": np.zeros(3)}, {"version": "new"})
    monkeypatch.undo()
    assert len(calls) == 2
    assert_old_intact(path, arrays)


CHILD = textwrap.dedent(
    """
    import sys
    import numpy as np
    from pitsolve.training.checkpoint import save_checkpoint

    path = sys.argv[1]
    x = np.empty(5_000_000)                    # 40 MB
    y = np.empty(2_500_000, dtype=np.int32)    # 10 MB
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        x.fill(i)
        y.fill(i)
        save_checkpoint(path, {"x": x, "y": y}, {"i": i})
    """
)


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_sigkill_while_writing_never_corrupts(tmp_path):
    """Kill a process that keeps rewriting a ~50 MB checkpoint: the file always loads whole."""
    path = tmp_path / "big.npz"
    save_checkpoint(path, {"x": np.zeros(5_000_000), "y": np.zeros(2_500_000, np.int32)}, {"i": 0})
    rng = np.random.default_rng(2024)
    seen = []
    for _ in range(5):
        with subprocess.Popen(
            [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True
        ) as proc:
            assert proc.stdout.readline().strip() == "ready"
            time.sleep(rng.uniform(0.0, 0.3))
            proc.send_signal(signal.SIGKILL)
            assert proc.wait(timeout=30) == -signal.SIGKILL
        arrays, meta = load_checkpoint(path)  # never a ValueError
        i = meta["i"]
        assert arrays["x"].shape == (5_000_000,) and arrays["y"].shape == (2_500_000,)
        assert np.all(arrays["x"] == i) and np.all(arrays["y"] == i)  # old or new, not mixed
        seen.append(i)
        # a writer killed mid-write may leave its temporary file; it never replaces the data
        for name in listing(tmp_path):
            if name != path.name:
                assert name.startswith(".big.npz.") and name.endswith(".tmp")
                os.unlink(tmp_path / name)
    assert len(seen) == 5


# -- damaged files ----------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"nothing\.npz"):
        load_checkpoint(tmp_path / "nothing.npz")


def test_truncated_or_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "ckpt.npz"
    save_checkpoint(path, {"x": np.arange(10_000.0), "y": np.ones(5)}, {"epoch": 1})
    data = path.read_bytes()
    bad = tmp_path / "bad.npz"
    for cut in (0, 10, len(data) // 2, len(data) - 1):
        bad.write_bytes(data[:cut])
        with pytest.raises(ValueError, match=r"checkpoint '.*bad\.npz' is corrupt or truncated"):
            load_checkpoint(bad)
    flipped = bytearray(data)
    flipped[len(data) // 3] ^= 0xFF  # inside the array data: caught by the CRC
    bad.write_bytes(bytes(flipped))
    with pytest.raises(ValueError, match="corrupt"):
        load_checkpoint(bad)
    np.savez(tmp_path / "plain.npz", x=np.zeros(2))
    with pytest.raises(ValueError, match="not a pitsolve checkpoint"):
        load_checkpoint(tmp_path / "plain.npz")


# -- model files: every model that describes itself, and the files of the last release --------
@pytest.mark.parametrize("model", [
    ps.models.ShPLRNN(3, 5, seed=1), ps.models.ClippedShPLRNN(3, 5, seed=2),
    ps.models.ALRNN(4, 2, seed=3), ps.models.Elman(4, 2, seed=4), ps.models.GRU(3, 1, seed=5),
    ps.models.LinearSSM(3, 2, readout_hidden=4, seed=6),
    ps.models.ObservedModel(ps.models.ALRNN(3, 1), ps.models.Affine.init(2, 3, seed=7)),
], ids=lambda m: type(m).__name__)
def test_models_round_trip_through_their_configuration(tmp_path, model):
    ps.training.save_model(tmp_path / "m.npz", model, {"dt": 0.1})
    loaded, meta = ps.training.load_model(tmp_path / "m.npz")
    assert type(loaded) is type(model) and meta["dt"] == 0.1
    assert loaded.config() == model.config()
    for k in model.params:
        np.testing.assert_array_equal(loaded.params[k], model.params[k])


def test_a_model_without_a_configuration_cannot_be_saved(tmp_path):
    with pytest.raises(TypeError, match="ODEStep"):
        ps.training.save_model(tmp_path / "m.npz", ps.models.ODEStep(ps.models.Lorenz63(),
                                                                      dt=0.01))


def test_model_files_of_the_last_release_load(tmp_path):
    """Files that stored a shPLRNN-family model by class name (and an observation's kind)."""
    alrnn = ps.models.ALRNN(3, 2, seed=1)
    save_checkpoint(tmp_path / "a.npz", {f"params/{k}": v for k, v in alrnn.params.items()},
                    {"model": "ALRNN", "relu_units": 2, "dt": 0.01})
    loaded, meta = ps.training.load_model(tmp_path / "a.npz")
    assert isinstance(loaded, ps.models.ALRNN) and loaded.relu_units == 2 and meta["dt"] == 0.01
    observed = ps.models.ObservedModel(ps.models.ShPLRNN(3, 6), ps.models.Affine.init(2, 3))
    save_checkpoint(tmp_path / "o.npz", {f"params/{k}": v for k, v in observed.params.items()},
                    {"model": "ShPLRNN", "relu_units": None, "observation": "Affine",
                     "differentiate_forcing": False})
    loaded, _ = ps.training.load_model(tmp_path / "o.npz")
    assert loaded.latent.hidden_dim == 6 and not loaded.observation.differentiate_forcing
    np.testing.assert_array_equal(loaded.params.flatten(), observed.params.flatten())
    save_checkpoint(tmp_path / "x.npz", {"params/a": np.ones(3)}, {"model": "Transformer"})
    with pytest.raises(ValueError, match="Transformer"):
        ps.training.load_model(tmp_path / "x.npz")
